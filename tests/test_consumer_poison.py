"""Bad input: dead-lettered to `<topic>.dlq` and `dead_letters`, and the consumer goes on."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from events_factory import Publisher, TaskRun, end_offsets, rows_by_key, topic_for

from assetlog.config import Topics
from assetlog.consumers import ProjectionRunner, run_until_caught_up
from assetlog.projections import migrate
from assetlog.schemas import MATERIALIZATION, METADATA, encode


def poison_messages(settings) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic, key, value, expected reason) for every kind of bad input."""
    good = TaskRun(["s3://bucket/poison.csv"], metadata={"s3://bucket/poison.csv": {"a": 1}}).events()
    materialization = next(r for t, r in good if t == MATERIALIZATION)
    metadata = next(r for t, r in good if t == METADATA)
    valid_bytes = encode(MATERIALIZATION, materialization)
    materializations = topic_for(settings, MATERIALIZATION)
    key = b"s3://bucket/poison.csv"
    return [
        (materializations, key, b"not avro at all", "bad-magic"),
        (materializations, key, None, "empty"),
        (materializations, key, valid_bytes[:30], "truncated"),
        (materializations, key, b"\xc3\x01" + bytes(8) + valid_bytes[10:], "unknown-schema"),
        (materializations, key, valid_bytes + b"\x00\x00", "trailing-bytes"),
        (materializations, key, encode(METADATA, metadata), "wrong-topic"),
        (materializations, b"bad key", encode(MATERIALIZATION, {**materialization, "asset_key": "bad key"}),
         "invalid-key"),
        (topic_for(settings, METADATA), key, encode(METADATA, {**metadata, "metadata_json": "{oops"}),
         "invalid-metadata"),
    ]


def read_dead_letter_topics(settings, expected: int, timeout: float = 30.0) -> list:
    consumer = Consumer(settings.kafka_client_config(required={
        "group.id": f"dlq-reader-{uuid.uuid4()}", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([Topics.dead_letter(t) for t in settings.topics.events])
    found = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    found.append(message)
    finally:
        consumer.close()
    return found


def stored_offsets(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        return {(t, p): o for t, p, o in conn.execute(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE projection = 'properties'")}


def dead_letter_topic_sizes(settings) -> dict[str, int]:
    """Messages in each dead-letter topic (high-water marks: exact, no waiting)."""
    consumer = Consumer(settings.kafka_client_config(required={"group.id": f"dlq-size-{uuid.uuid4()}"}))
    sizes = {}
    try:
        for topic in settings.topics.events:
            dlq = Topics.dead_letter(topic)
            partitions = consumer.list_topics(dlq, timeout=10).topics[dlq].partitions
            total = sum(consumer.get_watermark_offsets(TopicPartition(dlq, p), timeout=10)[1] for p in partitions)
            if total:
                sizes[dlq] = total
    finally:
        consumer.close()
    return sizes


@pytest.fixture
def world(isolated):
    migrate(isolated.dsn)
    return isolated


def test_poison_messages_are_dead_lettered_and_the_consumer_goes_on(world):
    settings = world.settings
    runner = ProjectionRunner("properties", settings)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        before = Publisher(settings)
        for t, r in TaskRun(["s3://bucket/before.csv"]).events():
            before.event(t, r)
        poison = poison_messages(settings)
        for topic, key, value, _reason in poison:
            before.raw(topic, key, value)
        after = TaskRun(["s3://bucket/after.csv"], ["s3://bucket/before.csv"]).events()
        for t, r in after:
            before.event(t, r)
        positions = before.flush()
        ends = end_offsets(positions)
        deadline = time.monotonic() + 60
        while stored_offsets(world.dsn) != ends:
            assert thread.is_alive(), "the consumer stopped on bad input"
            assert time.monotonic() < deadline, stored_offsets(world.dsn)
            time.sleep(0.1)
        assert thread.is_alive()
        assert "s3://bucket/after.csv" in rows_by_key(world.dsn, "assets")  # projected after the poison
    finally:
        runner.stop()
        thread.join(30)
    assert (runner.stats.dead_letters, runner.stats.stopped_by) == (len(poison), "signal")
    assert run_until_caught_up("lineage", settings).dead_letters == len(poison)

    with psycopg.connect(world.dsn) as conn:
        rows = conn.execute(
            'SELECT projection, topic, "offset", reason, detail, dead_letter_topic, message_key, message_value '
            'FROM dead_letters ORDER BY projection, topic, "offset"').fetchall()
        history = conn.execute("SELECT asset_key FROM lineage_history ORDER BY asset_key").fetchall()
    assert history == [("s3://bucket/after.csv",), ("s3://bucket/after.csv",), ("s3://bucket/before.csv",)]
    for projection in ("lineage", "properties"):
        mine = [r for r in rows if r[0] == projection]
        assert sorted(r[3] for r in mine) == sorted(p[3] for p in poison)  # both projections skip the same
        by_reason = {r[3]: r for r in mine}
        for topic, key, value, reason in poison:
            row = by_reason[reason]
            assert (row[1], row[5], row[6], row[7]) == (topic, Topics.dead_letter(topic), key, value)
            assert row[4], f"{reason} has no detail"
    assert by_reason["invalid-key"][4] == "asset_key 'bad key': Asset key cannot contain ' '"

    copies = read_dead_letter_topics(settings, 2 * len(poison))
    assert len(copies) == 2 * len(poison)
    for message in copies:
        headers = {k: v.decode() for k, v in message.headers()}
        original = (headers["assetlog.original.topic"], int(headers["assetlog.original.partition"]),
                    int(headers["assetlog.original.offset"]))
        row = next(r for r in rows if r[0] == headers["assetlog.projection"] and (r[1], r[2]) ==
                   (original[0], original[2]) and r[3] == headers["assetlog.error.reason"])
        assert message.topic() == Topics.dead_letter(original[0])
        assert (message.key(), message.value()) == (row[6], row[7])
        assert headers["assetlog.error.detail"] == row[4]


def test_dead_letters_are_not_copied_twice_when_a_batch_is_retried(world, monkeypatch):
    """Kafka acknowledges the copy, then PostgreSQL fails once: the retried batch must not copy again.

    The PostgreSQL failure is injected (a fault the real server cannot be asked to give at exactly
    that instant); the broker and the database are real.
    """
    publisher = Publisher(world.settings)
    publisher.raw(world.settings.topics.materializations, b"k", b"junk")
    publisher.flush()
    runner = ProjectionRunner("properties", world.settings, until_caught_up=True)
    original = runner.offsets.record_dead_letters
    calls = []

    def fail_once(conn, letters):
        calls.append(len(letters))
        if len(calls) == 1:
            raise psycopg.OperationalError("injected: server closed the connection unexpectedly")
        return original(conn, letters)

    monkeypatch.setattr(runner.offsets, "record_dead_letters", fail_once)
    stats = runner.run()
    assert (stats.dead_letters, stats.retries, calls) == (1, 1, [1, 1])
    assert dead_letter_topic_sizes(world.settings) == {f"{world.settings.topics.materializations}.dlq": 1}
