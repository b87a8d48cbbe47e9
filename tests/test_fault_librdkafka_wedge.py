"""Drill: real librdkafka clients, left knowing no broker the way a broker restart leaves them, are replaced.

Around a broker restart librdkafka can end knowing no broker and never reconnect
(`assetlog/broker_watch.py`). When its broker goes down it re-bootstraps, and if it then
learns the broker back while it still knows the bootstrap address (a consumer does, through
its group coordinator lookup), a Metadata answer that lists no broker (what a broker in
controlled shutdown sends for a few milliseconds) makes it forget both. A real broker gives
that answer only by chance, so here a proxy in front of the real broker (`kafka_proxy.py`)
drops the connections and gives it for 2 s. Everything else is real: librdkafka, the
broker, PostgreSQL, the runners and the publisher. A try that the client survives (it won
the race) is followed by another; consumers were left wedged at the first try in nearly
every run, a publisher in about half of the tries, an idle dead-letter producer less often. `test_consumer_broker_watch.py` and `test_producer_broker_watch.py` hand the watch a
wedged client's statistics; `test_fault_broker_wedge.py` (slow) restarts the real broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from events_factory import Publisher as RawProducer
from events_factory import TaskRun, events_of, publish, published_ends
from fault_support import assert_exact, read_dead_letters, stored_offsets, wait_for
from kafka_proxy import KafkaProxy
from producer_support import read_published

from assetlog.broker_watch import NoBrokerWatch, knows_a_broker
from assetlog.config import Settings
from assetlog.consumers import ProjectionRunner
from assetlog.producer import Publisher, materialize, publishing
from assetlog.projections import migrate
from assetlog.topics import Topics

pytestmark = pytest.mark.faults

FENCED_SECONDS = 2.0  # how long the proxy answers as a fenced broker (a real one: milliseconds, but by chance)
ATTEMPTS = 12  # tries before the drill gives up on wedging a client
IDLE_PRODUCER_ATTEMPTS = 40  # an idle producer is left so less often (a plain one: 2 tries of 8; the runner's: see docs)
GRACE = 2.0  # the watch's grace here (15 s in production)
WATCHED = {"topic.metadata.refresh.interval.ms": "10",  # ask often, as a consumer does when a leader goes away
           "statistics.interval.ms": "250"}


@pytest.fixture
def proxy(isolated) -> Iterator[KafkaProxy]:
    migrate(isolated.dsn)
    proxy = KafkaProxy(isolated.settings.kafka_bootstrap)
    yield proxy
    proxy.close()


def _through(settings: Settings, proxy: KafkaProxy) -> Settings:
    return replace(settings, kafka_bootstrap=proxy.bootstrap, kafka_settings={**settings.kafka_settings, **WATCHED})


def _wedge(proxy: KafkaProxy, watches: Callable[[], list[NoBrokerWatch]], replaced: Callable[[], bool],
           what: str, tries: int = ATTEMPTS) -> int:
    """Stop the broker's connections and answer as a fenced broker, until the client under test is
    replaced; the number of tries it took. A try that leaves every client knowing a broker again
    (the client won the race with its re-bootstrap) is followed by the next at once."""
    for attempt in range(1, tries + 1):
        proxy.fenced = True
        proxy.drop_connections()  # every broker the client knows goes down: it re-bootstraps
        time.sleep(FENCED_SECONDS)
        proxy.fenced = False
        deadline = time.monotonic() + GRACE + 10
        recovered_since = None
        while time.monotonic() < deadline:
            if replaced():
                return attempt
            recovered = all(w.latest is not None and knows_a_broker(w.latest["brokers"]) for w in watches())
            recovered_since = (recovered_since or time.monotonic()) if recovered else None
            if recovered_since is not None and time.monotonic() - recovered_since > 1.0:
                break
            time.sleep(0.1)
    raise AssertionError(f"{what}: not replaced after {tries} tries ({proxy.fenced_answers} fenced answers)")


def test_runners_wedged_by_a_fenced_brokers_answers_are_replaced_and_project_everything_once(isolated, proxy, stack):
    first = publish(isolated.settings, events_of([TaskRun([f"s3://fence/out{i}"], [f"s3://fence/in{i}"])
                                                  for i in range(5)]))
    settings = _through(isolated.settings, proxy)
    runners = {name: ProjectionRunner(name, settings, batch_size=50) for name in ("properties", "lineage")}
    for runner in runners.values():
        runner.brokers.grace = GRACE
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners.values()]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(stored_offsets(isolated.dsn, n) == published_ends(first) for n in runners), "projected", 60)
        assert all(knows_a_broker(r.brokers.latest["brokers"]) for r in runners.values() if r.brokers.latest)
        _wedge(proxy, lambda: [r.brokers for r in runners.values()],
               lambda: all(r.stats.reconnects >= 1 for r in runners.values()), "the runners")
        more = publish(isolated.settings, events_of([TaskRun([f"s3://fence/after{i}"], [f"s3://fence/out{i}"])
                                                     for i in range(5)]))
        wait_for(lambda: all(stored_offsets(isolated.dsn, n) == published_ends(first + more) for n in runners),
                 "the events published after the wedge projected by the replacements", 60)
    finally:
        for runner in runners.values():
            runner.stop()
        for thread in threads:
            thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert_exact(isolated, stack, first + more)


@materialize("s3://fence/published", asset_deps=["s3://fence/source"])
def build(n: int) -> int:
    return n


def test_a_publisher_wedged_by_a_fenced_brokers_answers_is_replaced_and_delivers_every_event(isolated, proxy):
    publisher = Publisher(_through(isolated.settings, proxy), producer_config=dict(WATCHED))
    publisher.brokers.grace = GRACE
    runs = 0
    try:
        with publishing(publisher):
            for _ in range(10):
                build(runs)
                runs += 1
            assert publisher.flush(30).complete

            def replaced() -> bool:  # a run every poll: the wedged producer holds them, the new one sends them
                nonlocal runs
                build(runs)
                runs += 1
                return publisher.reconnects >= 1

            _wedge(proxy, lambda: [publisher.brokers], replaced, "the publisher")
            result = publisher.flush(30)
        assert result.complete, result
    finally:
        publisher.close()
    published = read_published(isolated.settings, at_least=2 * runs)
    # Every event reached Kafka. A batch in flight when the client dropped its broker may have landed
    # unacknowledged and been sent again by the replacement; consumers keep one copy (unique event ids).
    ids = {m.record["event_id"] for m in published}
    assert len(ids) == 2 * runs, f"{2 * runs - len(ids)} of {2 * runs} events never reached Kafka"


def test_a_dead_letter_producer_wedged_by_a_fenced_brokers_answers_is_replaced_and_the_copy_arrives(isolated, proxy):
    topic = isolated.settings.topics.materializations
    raw = RawProducer(isolated.settings)  # straight to the broker: the poison messages themselves
    raw.raw(topic, b"s3://fence/poison", b"not avro: makes the dead-letter producer")
    raw.producer.flush(10)
    runner = ProjectionRunner("properties", _through(isolated.settings, proxy), batch_size=50)
    runner.brokers.grace = runner.dead_letters.brokers.grace = GRACE
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: runner.stats.dead_letters == 1, "the first poison message dead-lettered", 60)
        # The dead-letter producer is replaced only when it has a copy to make: wedge it first (the runner
        # serves its statistics while idle), then give it one.
        _wedge(proxy, lambda: [runner.dead_letters.brokers], runner.dead_letters.brokers.wedged,
               "the dead-letter producer", IDLE_PRODUCER_ATTEMPTS)
        raw.raw(topic, b"s3://fence/poison", b"not avro: copied by the replacement")
        raw.producer.flush(10)
        wait_for(lambda: runner.stats.dead_letters == 2, "the second poison message dead-lettered", 60)
    finally:
        runner.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert runner.stats.dead_letter_reconnects == 1
    assert read_dead_letters(isolated.settings, Topics.dead_letter(topic), 2) == [
        b"not avro: makes the dead-letter producer", b"not avro: copied by the replacement"]
