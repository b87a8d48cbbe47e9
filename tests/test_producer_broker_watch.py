"""A publisher or dead-letter producer whose Kafka client forgot every broker is replaced, and every
event still reaches Kafka exactly once.

The state itself (librdkafka left knowing no broker around a broker restart) comes from a real
broker only by chance (see `assetlog/broker_watch.py`; `test_fault_librdkafka_wedge.py` wedges a
real publisher on purpose through a proxy); here the statistics a wedged producer
reports (no broker at all: a producer has no logical group coordinator) are handed to the watch,
the one fault given by hand, and librdkafka's own statistics are switched off so that nothing
contradicts them. Everything else is real: the broker, the outbox, the producers, and the events
read back from the topics.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from events_factory import Publisher as RawProducer
from fault_support import read_dead_letters, wait_for
from producer_support import read_published

from assetlog.broker_watch import knows_a_broker
from assetlog.consumers import DeadLetterPublisher, ProjectionRunner
from assetlog.consumers.batch import DeadLetter
from assetlog.producer import Publisher, materialize, publishing
from assetlog.producer.outbox import Outbox
from assetlog.projections import Position, migrate
from assetlog.topics import Topics

# librdkafka's statistics of a producer that dropped every broker: not even a bootstrap one is left.
WEDGED = json.dumps({"type": "producer", "brokers": {}})
NO_STATISTICS = {"statistics.interval.ms": 0}  # the test alone says what the statistics show


@materialize("s3://wedge/out", asset_deps=["s3://wedge/in"])
def build(n: int) -> int:
    return n


def _outbox_events(directory) -> int:
    outbox = Outbox(directory)
    try:
        return outbox.status()["events"]
    finally:
        outbox.close()


def test_a_connected_publishers_statistics_name_a_broker(isolated):
    """No false alarm: a healthy producer's own statistics (every 200 ms here) list the broker it learned."""
    with Publisher(isolated.settings, producer_config={"statistics.interval.ms": 200}) as publisher:
        wait_for(lambda: publisher.brokers.latest is not None, "the producer's statistics", timeout=30)
        latest = publisher.brokers.latest
        assert latest is not None and knows_a_broker(latest["brokers"]), latest["brokers"]
        assert not publisher.brokers.wedged() and publisher.reconnects == 0


def test_a_publisher_whose_producer_knows_no_broker_replaces_it_and_delivers_every_event_once(isolated, caplog):
    caplog.set_level(logging.WARNING, logger="assetlog.producer")
    # linger.ms keeps the first events in the old producer's queue, never sent (nothing hurries it
    # before the flush): the replacement finds them undelivered, as a wedged producer would hold them.
    publisher = Publisher(isolated.settings, producer_config={**NO_STATISTICS, "linger.ms": 20000})
    try:
        with publishing(publisher):
            for n in range(5):
                build(n)  # outside a flow: nothing flushes
            assert publisher.wait_committed() is None
            wait_for(lambda: publisher._sender is not None and publisher._sender.epoch_events == 10,
                     "the 10 events (a materialization and a dependency per run) handed to the producer", timeout=30)
            old = publisher._sender.producer
            publisher.brokers.grace = 0
            publisher.brokers(WEDGED)  # what the statistics say once the producer dropped all its brokers
            wait_for(lambda: publisher.reconnects == 1, "the producer replaced", timeout=30)
            assert publisher._sender.producer is not old
            for n in range(5, 8):
                build(n)  # through the new producer
            result = publisher.flush(30)
        assert result.complete, result
        assert _outbox_events(isolated.settings.outbox_dir) == 0
    finally:
        publisher.close()
    published = read_published(isolated.settings, at_least=16)
    ids = Counter(m.record["event_id"] for m in published)
    assert len(published) == 16 and set(ids.values()) == {1}, ids.most_common(3)
    assert sorted(m.key for m in published) == sorted(["s3://wedge/out"] * 16)
    lines = [r.getMessage() for r in caplog.records if "known no broker" in r.getMessage()]
    assert len(lines) == 1 and "the 10 lineage events it had not delivered" in lines[0], lines
    assert not [r for r in caplog.records if "were not delivered" in r.getMessage()]  # one line, not one per row


def test_a_dead_letter_producer_that_knows_no_broker_is_replaced_and_the_copy_arrives(isolated, caplog):
    caplog.set_level(logging.WARNING, logger="assetlog.consumers")
    topic = isolated.settings.topics.materializations
    dlq = Topics.dead_letter(topic)
    letters = [DeadLetter(Position(topic, 0, n), b"key", b"poison %d" % n, "bad-magic", "not Avro") for n in range(2)]
    settings = replace(isolated.settings, kafka_settings={**isolated.settings.kafka_settings,
                                                          "statistics.interval.ms": "0"})
    dead_letters = DeadLetterPublisher(settings, "properties")
    try:
        dead_letters.publish(letters[:1])
        old = dead_letters._producer
        dead_letters.brokers.grace = 0
        dead_letters.brokers(WEDGED)
        dead_letters.serve()
        dead_letters.publish(letters[1:])
        assert dead_letters.reconnects == 1 and dead_letters._producer is not old
    finally:
        dead_letters.close()
    copies = read_dead_letters(isolated.settings, dlq, 2)
    assert copies == [b"poison 0", b"poison 1"]
    lines = [r.getMessage() for r in caplog.records if "known no broker" in r.getMessage()]
    assert len(lines) == 1 and "dead-letter producer" in lines[0], lines


def test_a_runner_replaces_its_dead_letter_producer_once_it_knows_no_broker(isolated):
    """The runner hands the dead-letter producer its statistics between batches and reports the
    replacement (`dead_letter_reconnects` in `assetlog consume --json`)."""
    migrate(isolated.dsn)
    settings = replace(isolated.settings, kafka_settings={**isolated.settings.kafka_settings,
                                                          "statistics.interval.ms": "0"})
    topic = isolated.settings.topics.materializations
    with _running_after_one_poison(isolated, settings) as (runner, raw):
        runner.dead_letters.brokers.grace = 0
        runner.dead_letters.brokers(WEDGED)
        raw.raw(topic, b"s3://wedge/poison", b"not avro either")
        raw.producer.flush(10)
        wait_for(lambda: runner.stats.dead_letters == 2 and runner.stats.dead_letter_reconnects == 1,
                 "the second dead-lettered through a new producer", 60)
    assert runner.stats.as_dict()["dead_letter_reconnects"] == 1 and runner.stats.reconnects == 0
    assert read_dead_letters(isolated.settings, Topics.dead_letter(topic), 2) == [b"not avro at all",
                                                                                 b"not avro either"]


def test_an_idle_runner_keeps_serving_its_dead_letter_producers_statistics(isolated):
    """Between poison messages nothing else polls the dead-letter producer: the runner serves its
    statistics (every 200 ms here), so the watch stays current and librdkafka's queue does not grow."""
    migrate(isolated.dsn)
    settings = replace(isolated.settings, kafka_settings={**isolated.settings.kafka_settings,
                                                          "statistics.interval.ms": "200"})
    with _running_after_one_poison(isolated, settings) as (runner, _):
        after = time.time() + 2  # statistics librdkafka made later than this were served by the runner
        wait_for(lambda: (runner.dead_letters.brokers.latest or {}).get("time", 0) >= after,
                 "the dead-letter producer's statistics served while idle", 30)
    latest = runner.dead_letters.brokers.latest
    assert latest is not None and knows_a_broker(latest["brokers"]) and runner.stats.dead_letter_reconnects == 0


@contextmanager
def _running_after_one_poison(isolated, settings) -> Iterator[tuple[ProjectionRunner, RawProducer]]:
    """A properties runner on its own thread that has dead-lettered one poison message (so its
    dead-letter producer exists); stopped on the way out."""
    raw = RawProducer(isolated.settings)
    raw.raw(isolated.settings.topics.materializations, b"s3://wedge/poison", b"not avro at all")
    raw.producer.flush(10)
    runner = ProjectionRunner("properties", settings, batch_size=50)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: runner.stats.dead_letters == 1, "the first poison message dead-lettered", 60)
        yield runner, raw
    finally:
        runner.stop()
        thread.join(60)
