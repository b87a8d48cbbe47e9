"""A consumer whose Kafka client forgot every broker is replaced, and nothing is lost or doubled.

The state itself (librdkafka left knowing no broker around a broker restart) comes from a
real broker only by chance (1 restart in 31 for a plain consumer refreshing metadata every
10 ms; `test_fault_broker_wedge.py`, slow, restarts a real broker under live runners, and
`test_fault_librdkafka_wedge.py` wedges real clients on purpose through a proxy). Here
the statistics librdkafka reports in that state are written out (the shape recorded from a
wedged client: only the logical group coordinator left), the one fault given by hand.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace

import psycopg
import pytest
from events_factory import TaskRun, events_of, guide_pipelines, publish, published_ends
from fault_support import CONSUMER_KNOWING_NO_BROKER, stored_offsets, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from assetlog.broker_watch import NoBrokerWatch, describe, knows_a_broker
from assetlog.consumers import ProjectionRunner
from assetlog.consumers.kafka_consumer import event_consumer
from assetlog.projections import migrate

WEDGED = CONSUMER_KNOWING_NO_BROKER


@pytest.fixture
def world(isolated):
    migrate(isolated.dsn)
    return isolated


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_connected_clients_statistics_name_a_broker(world):
    reports: list[str] = []
    consumer = event_consumer(world.settings, f"{world.settings.topic_prefix}.watch",
                              defaults={"statistics.interval.ms": 200, "stats_cb": reports.append})
    try:
        consumer.subscribe(list(world.settings.topics.events))
        wait_for(lambda: consumer.poll(0.1) is None and len(reports) >= 3, "statistics", timeout=30)
    finally:
        consumer.close()
    watch = NoBrokerWatch(grace=0)
    watch(reports[-1])
    assert knows_a_broker(json.loads(reports[-1])["brokers"]) and not watch.wedged()


def test_knowing_no_broker_for_the_grace_period_is_wedged_and_a_broker_again_clears_it():
    clock = Clock()
    watch = NoBrokerWatch(grace=15, clock=clock)
    watch(WEDGED)
    clock.now += 14
    watch(WEDGED)  # still none: the state started at the first report
    assert not watch.wedged()
    clock.now += 1
    assert watch.wedged()
    watch(json.dumps({"brokers": {"127.0.0.1:9092/1": {"source": "learned", "state": "UP"}}}))
    assert not watch.wedged()
    watch("not statistics")  # ignored, never raises inside librdkafka's callback
    assert not watch.wedged()


def test_a_runner_whose_client_forgot_every_broker_replaces_it_and_projects_the_rest_once(world):
    first = publish(world.settings, events_of(guide_pipelines()))
    runner = ProjectionRunner("lineage", world.settings, batch_size=50)
    runner.brokers.grace = 0
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: stored_offsets(world.dsn, "lineage") == published_ends(first), "first events projected", 60)
        member = runner.instance_id
        runner.brokers(WEDGED)  # what the statistics say once the client dropped all its brokers
        wait_for(lambda: runner.stats.reconnects == 1, "the client replaced", 30)
        more = publish(world.settings, TaskRun(["s3://bucket/after.csv"], ["s3://bucket/before.csv"]).events())
        wait_for(lambda: stored_offsets(world.dsn, "lineage") == published_ends(first + more), "later events projected", 60)
        assert runner.instance_id == member  # the same slot: the broker hands the same member its partitions
    finally:
        runner.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert runner.stats.reconnects == 1
    with psycopg.connect(world.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lineage_history").fetchone()[0] == len(first) + len(more)


def test_a_quiet_consumer_names_its_clients_state_once_per_quiet_spell():
    clock = Clock()
    watch = NoBrokerWatch(clock=clock, idle_report=60)
    assert watch.quiet_report(received=False) is None
    clock.now += 60
    assert watch.quiet_report(received=False) == "no statistics yet"
    clock.now += 600
    assert watch.quiet_report(received=False) is None  # once per spell
    assert watch.quiet_report(received=True) is None
    watch(WEDGED)
    clock.now += 60
    assert watch.quiet_report(received=False) == "group ?/?; brokers: none known; partitions: none assigned"


def test_a_runner_that_receives_nothing_logs_its_clients_state(world, caplog):
    caplog.set_level(logging.INFO, logger="assetlog.consumers")
    settings = replace(world.settings, kafka_settings={**world.settings.kafka_settings,
                                                       "statistics.interval.ms": "200"})
    runner = ProjectionRunner("lineage", settings)
    runner.brokers.idle_report = 2
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: "nothing received for" in caplog.text, "the quiet report", 60)
    finally:
        runner.stop()
        thread.join(60)
    line = next(r.getMessage() for r in caplog.records if "nothing received for" in r.getMessage())
    # e.g. "...: nothing received for 2s; Kafka client: group up/steady; brokers: 127.0.0.1:9092/1 UP;
    # partitions: 9 active" (the partitions reached their ends; the state names a stall's kind)
    assert "group up/steady" in line and "/1 UP" in line and "9 active" in line, line


_STATS_NAMES = ["brokers", "cgrp", "topics", "partitions", "source", "state", "join_state", "desired", "fetch_state",
                "-1", "0", "learned"]
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(_STATS_NAMES), inner, max_size=4), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(document=_json)
def test_statistics_of_any_shape_never_raise_in_the_callback(document) -> None:  # type: ignore[no-untyped-def]
    """The watch runs inside librdkafka's callback, so an exception would surface from consume() and stop
    the consumer: any JSON (or none) is taken or ignored, never raised on. Pure parsing: no server needed."""
    watch = NoBrokerWatch()
    watch(json.dumps(document))
    watch("not json {")
    assert watch.wedged() is False  # just started: never past the grace period
    assert isinstance(describe(watch.latest), str)
