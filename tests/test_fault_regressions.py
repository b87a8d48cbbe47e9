"""Regressions for what the fault drills uncovered, each on the real broker and database.

- A valid event whose owner is longer than PostgreSQL lets the owners index hold (about 2.7 kB)
  failed its batch forever: the properties consumer retried it with backoff and never moved on.
- A bad message near Kafka's size limit could not be copied to its dead-letter topic (the copy
  adds headers), and the consumer exited on it, again after each restart.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from events_factory import Asset, TaskRun, Upstream, apply_directly, props, rows_by_key
from psycopg import sql

from assetlog.config import Topics
from assetlog.consumers import DeadLetter, DeadLetterPublisher
from assetlog.projections import InvalidEvent, Position, migrate, to_event
from assetlog.projections.events import MAX_OWNER_BYTES

pytestmark = pytest.mark.faults


def test_an_owner_longer_than_the_index_allows_is_refused_by_name_and_one_at_the_limit_is_stored(isolated):
    for owner in ("o" * (MAX_OWNER_BYTES + 1), "ö" * (MAX_OWNER_BYTES // 2 + 1)):
        for event_type, record in TaskRun([Asset("s3://b/long.csv", props(owners=["team", owner]))]).events():
            with pytest.raises(InvalidEvent) as refused:
                to_event(event_type, record)
            assert refused.value.reason == "invalid-text"
            assert "properties.owners[1]" in refused.value.detail and str(MAX_OWNER_BYTES) in refused.value.detail
        _t, dependency = TaskRun(["s3://b/down.csv"], [Upstream("s3://b/up.csv", "EXPLICIT",
                                                                props(owners=[owner]))]).events()[1]
        with pytest.raises(InvalidEvent, match=r"upstream_properties\.owners\[0\]"):
            to_event("dependency", dependency)

    migrate(isolated.dsn)
    at_limit = ["o" * MAX_OWNER_BYTES, "😀" * (MAX_OWNER_BYTES // 4)]
    events = TaskRun([Asset("s3://b/limit.csv", props(owners=at_limit))]).events()
    with psycopg.connect(isolated.dsn) as conn:
        apply_directly(conn, "properties", events)
    assert rows_by_key(isolated.dsn, "asset_properties")["s3://b/limit.csv"]["owners"] == at_limit


def test_a_dead_letter_too_large_to_copy_with_its_headers_is_copied_without_its_value(isolated):
    topic = isolated.settings.topics.materializations
    huge = DeadLetter(Position(topic, 0, 41), b"s3://fuzz/huge.bin", b"\x00" * 999_900, "bad-magic", "not Avro")
    small = DeadLetter(Position(topic, 0, 42), b"k", b"junk", "bad-magic", "not Avro")
    publisher = DeadLetterPublisher(isolated.settings, "properties")
    try:
        publisher.publish([huge, small])
    finally:
        publisher.close()
    assert huge.delivered and small.delivered

    dlq = Topics.dead_letter(topic)
    consumer = Consumer(isolated.settings.kafka_client_config(required={"group.id": f"t-{uuid.uuid4()}"}))
    try:
        consumer.assign([TopicPartition(dlq, p, 0) for p in consumer.list_topics(dlq, timeout=10).topics[dlq].partitions])
        copies = []
        while len(copies) < 2:
            message = consumer.poll(10)
            assert message is not None and message.error() is None
            copies.append(message)
    finally:
        consumer.close()
    by_offset = {dict(m.headers())["assetlog.original.offset"]: m for m in copies}
    trimmed, whole = by_offset[b"41"], by_offset[b"42"]
    assert trimmed.value() is None and trimmed.key() == huge.key
    assert b"999900 bytes of value" in dict(trimmed.headers())["assetlog.value.omitted"]
    assert (whole.key(), whole.value()) == (b"k", b"junk") and "assetlog.value.omitted" not in dict(whole.headers())


def test_a_task_loop_faster_than_the_writer_waits_for_it_and_every_event_still_arrives(isolated, monkeypatch):
    """The memory drill's producer grew with the stream: publish() queued without bound, and committed
    rows waiting for Kafka kept their messages in memory. With small bounds (the real ones are 5,000
    runs and 40,000 events), the queue stays under its bound and rows beyond the in-memory one are
    read back from the outbox: every event arrives, once."""
    from producer_support import read_published

    from assetlog.producer import Publisher, materialize
    from assetlog.producer import outbox_writer as writer_module
    from assetlog.producer import publisher as publisher_module

    monkeypatch.setattr(publisher_module, "MAX_QUEUED_RUNS", 50)  # the caller side's bound
    monkeypatch.setattr(writer_module, "MAX_UNSENT_IN_MEMORY", 300)  # the writer thread's
    from assetlog.producer import flow, publishing

    build = materialize("s3://bounded/out", asset_deps=["s3://bounded/in"])(lambda n: None)
    longest = 0
    with Publisher(isolated.settings, flush_timeout=30) as publisher, publishing(publisher):
        @flow
        def many() -> None:
            nonlocal longest
            for n in range(4000):
                build(n)
                longest = max(longest, len(publisher._queue))
        many()
        assert publisher.flush().complete
    assert longest <= 50
    arrived = read_published(isolated.settings, at_least=8000)
    assert len({m.record["event_id"] for m in arrived}) == len(arrived) == 8000


def test_a_flow_holds_no_finished_task_run_only_what_it_passes_on(isolated):
    """A flow remembers each result with what its producing run passes on (for the runs it feeds),
    not the task run: the run, its metadata and upstream list (already turned into events) are let
    go when the task returns, so a long flow does not grow the heap the garbage collector scans."""
    import gc

    from producer_support import run_and_read

    from assetlog.producer import add_asset_metadata, current_flow_run, flow, materialize
    from assetlog.producer.runtime import TaskRun

    held = []

    @materialize("s3://held/out", asset_deps=["s3://held/in"])
    def build() -> dict:
        add_asset_metadata("s3://held/out", {"rows": 1})
        return {"result": 1}

    @flow
    def one() -> None:
        result = build()
        run = current_flow_run()
        held.append(run.lineage.passed_on_with(result))
        # this flow's task runs still alive after their task returned (other tests' runs may be alive in
        # this process, waiting for a collection: they are not this flow's concern)
        held.append([o for o in gc.get_objects() if isinstance(o, TaskRun) and o.flow_run is run])

    outcome = run_and_read(isolated.settings, one)
    passed_on, task_runs_alive = held
    assert [(asset.key, from_deps) for asset, from_deps in passed_on] == [("s3://held/out", False)]
    assert task_runs_alive == []
    assert [m["metadata_json"] for m in outcome.metadata] == ['{"rows":1}']
    assert [d["upstream_key"] for d in outcome.dependencies] == ["s3://held/in"]


@pytest.mark.timeout(600)  # waits for PostgreSQL's autovacuum launcher, then a replay
def test_a_replay_swaps_even_while_autovacuum_holds_a_live_table(isolated):
    """P3 at 1M events failed two runs in three: 'could not lock the tables for the swap'. An
    autovacuum of the freshly filled live tables held them, and the swap's short lock waits never
    lasted the deadlock_timeout after which PostgreSQL cancels an autovacuum in the way. Here a
    crawling autovacuum (per-table cost settings, so it never ends by itself) holds lineage_history.
    The swap sees that autovacuum alone holds its tables (`autovacuum.holds_alone`) and makes its
    long try first: one try, where it took more than its three short ones before."""
    import json
    import subprocess
    import sys
    import time

    from events_factory import publish
    from fault_support import events_of_runs, realistic_runs

    from assetlog.consumers import run_until_caught_up

    migrate(isolated.dsn)
    publish(isolated.settings, events_of_runs(realistic_runs(1000, seed=3)))
    assert run_until_caught_up("lineage", isolated.settings).messages > 0
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        # The history is partitioned: autovacuum works on its partitions (the parent holds no rows).
        for (partition,) in conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits "
                                         "WHERE inhparent = 'lineage_history'::regclass").fetchall():
            conn.execute(sql.SQL(
                "ALTER TABLE {} SET (autovacuum_vacuum_insert_threshold = 1, autovacuum_vacuum_insert_scale_factor "
                "= 0, autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)").format(
                sql.Identifier(partition)))
        # The launcher visits each database within autovacuum_naptime (1 min by default), if one of its
        # workers is free: with the other test worker's databases and a big benchmark database on the
        # same server, 120 s was once not enough.
        deadline = time.monotonic() + 300
        while not conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND "
                               "query LIKE 'autovacuum: %lineage_history%'").fetchone():
            assert time.monotonic() < deadline, "autovacuum never started on lineage_history"
            time.sleep(0.5)
    replay = subprocess.run([sys.executable, "-m", "assetlog", "replay", "lineage", "--json"], env=isolated.env(),
                            capture_output=True, text=True, timeout=180, check=False)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["swap_attempts"] == 1  # it outwaited the vacuum at once
