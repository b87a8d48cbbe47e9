"""Drill: 1,000 fuzzed messages mixed into valid traffic; the consumers never crash.

Bad input of every kind lands on the event topics between valid events:
random bytes (some near Kafka's 1 MB message limit), truncated Avro, a valid
header over a random body, valid Avro that breaks a rule (NUL characters,
which PostgreSQL text cannot hold, bad keys and ids, metadata that is not a
JSON object), events on the wrong topic. Valid events with hostile strings
(SQL quotes and comments, format placeholders, astral and right-to-left
unicode, control characters, the text `\\u0000`, values near 1 MB) are
projected like any other and must come back from PostgreSQL verbatim.

Verdict: both `assetlog consume` processes are still running, every bad
message is in its `<topic>.dlq` and in `dead_letters` once per projection
(with a reason), the valid events give exactly the tables an uninterrupted
projection of them alone gives, and `replay --check` is clean.

A NUL character is refused with reason `invalid-text` wherever it occurs in
an event (PostgreSQL text and jsonb cannot store it): dead-lettered, never
altered.
"""

from __future__ import annotations

import json
import random
import signal
import uuid
from collections import Counter
from dataclasses import dataclass

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from events_factory import WHOLE_EVENT, Asset, Publisher, TaskRun, Upstream, dump_tables, props, topic_for
from fault_support import (
    PROJECTIONS,
    consume_process,
    events_of_runs,
    expected_counts,
    process_log,
    realistic_runs,
    replay_check,
    stop_processes,
    table_counts,
    uninterrupted_dump,
    wait_until_projected,
)

from assetlog.config import Topics
from assetlog.projections import migrate
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA, encode
from assetlog.schemas.codec import registry

pytestmark = pytest.mark.faults

BAD_MESSAGES = 1000
# About what a producer accepts by default (librdkafka's message.max.bytes, key and value included).
NEAR_LIMIT = 999_000
# A value this long with an 18-byte key just fits; the same plus dead-letter headers does not.
AT_LIMIT = 999_900

HOSTILE = [
    "'; DROP TABLE assets; --", "O'Brien \"quoted\" `ticks` $$dollar$$ $1 %s %(name)s {0} {}",
    "back\\slash \\\\ \\n \\u0000 (the six characters, not a NUL)", "Robert'); DELETE FROM lineage_history;--",
    "日本語のテーブル", "مرحبا بالعالم", "emoji 😀🚀 astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "combining e\u0301 zero\u200bwidth",
    "line\u2028separator\u2029paragraph", "bell\x07 escape\x1b[31m delete\x7f tab\t newline\n cr\r",
    "<script>alert('x')</script>", "\ufeffbyte order mark", "x" * 2500,
]
HOSTILE_KEYS = ["s3://bucket/ünïcødé/😀/table.parquet", "s3://bucket/semi;colon/dollar$$/paren(s)/at@/plus+",
                "pg://db/schema/\u202eright-to-left", "s3://bucket/" + "k" * 490]


@dataclass
class Bad:
    topic: str
    key: bytes | None
    value: bytes | None
    reasons: frozenset[str]  # the dead-letter reasons this message may get


def valid_run(rng: random.Random, i: int, **overrides) -> TaskRun:
    key = f"s3://fuzz/base/{rng.randrange(50)}.csv"
    fields = {"assets": [Asset(key, props(f"n{i}"))], "upstreams": [f"s3://fuzz/base/up{rng.randrange(50)}.csv"],
              "metadata": {key: {"i": i}}, "task_name": f"fuzz_{i}"}
    fields.update(overrides)
    return TaskRun(**fields)


def hostile_runs(rng: random.Random) -> list[TaskRun]:
    """Valid events whose strings try every trick; they must be stored exactly."""
    runs = []
    for i, text in enumerate(HOSTILE):
        key = f"{HOSTILE_KEYS[i % len(HOSTILE_KEYS)]}/{i}"  # one asset per text: last-write-wins keeps each
        runs.append(TaskRun(
            [Asset(key, props(text, text, [text[:300], "team"], text))],
            [Upstream(HOSTILE_KEYS[(i + 1) % len(HOSTILE_KEYS)], "EXPLICIT", props(text))],
            metadata={key: {text: text, "nested": [text, {"k": text}]}}, status="FAILED", by=text,
            error=(text, text), task_name=text, flow_name=text))
    big = "é" * (NEAR_LIMIT // 8)  # about 250 kB of text, 2 bytes each in UTF-8, in each of two fields
    runs.append(TaskRun([Asset("s3://fuzz/big/properties.csv", props("big", big, ["ö" * 500]))], task_name=big))
    runs.append(TaskRun(["s3://fuzz/big/metadata.csv"], metadata={"s3://fuzz/big/metadata.csv": {"blob": "x" * 900_000}}))
    return runs


def fuzzed(settings, rng: random.Random, count: int) -> list[Bad]:
    topics = settings.topics
    type_of = {topics.materializations: MATERIALIZATION, topics.dependencies: DEPENDENCY,
               topics.metadata: METADATA}
    fingerprints = {v.event_type: v.header for v in registry().by_fingerprint.values()}
    undecodable = frozenset({"truncated", "malformed", "trailing-bytes", "bad-magic", "unknown-schema", "empty"})
    rejected = undecodable | {"wrong-topic", "invalid-key", "invalid-uuid", "invalid-metadata", "invalid-text"}
    bad: list[Bad] = []

    def some_valid(i: int) -> tuple[str, dict]:
        events = valid_run(rng, i).events()
        return events[rng.randrange(len(events))]

    def record_with(event_type: str, record: dict, field: str, value) -> bytes:
        changed = json.loads(json.dumps(record, default=str))
        changed["event_time"] = record["event_time"]
        target = changed
        *path, last = field.split(".")
        for part in path:
            target = target[part]
        target[last] = value
        return encode(event_type, changed)

    kinds = ["random", "header-random", "truncated", "nul", "rule", "trailing", "wrong-topic", "bad-key-bytes"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        topic = rng.choice(topics.events)
        key: bytes | None = rng.choice([b"s3://fuzz/bad.csv", None, b""])
        if kind == "random":
            size = rng.choice([1, 5, 9, 10, 64, 300, 4096])
            value = bytes([rng.choice([b for b in range(256) if b != 0xC3])]) + rng.randbytes(size - 1)
            bad.append(Bad(topic, key, value, frozenset({"bad-magic"})))
        elif kind == "header-random":
            header = fingerprints[rng.choice(list(fingerprints))]
            bad.append(Bad(topic, key, header + rng.randbytes(rng.choice([0, 1, 7, 40, 200, 2000])), rejected))
        elif kind == "truncated":
            event_type, record = some_valid(i)
            data = encode(event_type, record)
            bad.append(Bad(topic_for(settings, event_type), key, data[:rng.randrange(1, len(data))],
                           frozenset({"truncated", "malformed", "bad-magic"})))
        elif kind == "nul":
            event_type, record = some_valid(i)
            field = {MATERIALIZATION: ["run.task_name", "run.flow_name", "status_by", "properties.name"],
                     DEPENDENCY: ["run.task_name", "run.flow_name"],
                     METADATA: ["run.task_name", "metadata_json"]}[event_type]
            chosen = rng.choice(field)
            if chosen == "status_by":
                chosen = "by"
            if chosen == "metadata_json":
                value = encode(event_type, {**record, "metadata_json": json.dumps({"a": "nul\x00here"})})
            else:
                value = record_with(event_type, record, chosen, f"before\x00after {i}")
            bad.append(Bad(topic_for(settings, event_type), key, value, frozenset({"invalid-text"})))
        elif kind == "rule":
            event_type, record = some_valid(i)
            which = rng.choice(["uuid", "key", "metadata"] if event_type == METADATA else ["uuid", "key"])
            if which == "uuid":
                value, reason = record_with(event_type, record, "event_id", "'; SELECT 1; --"), "invalid-uuid"
            elif which == "key":
                field = "downstream_key" if event_type == DEPENDENCY else "asset_key"
                value, reason = record_with(event_type, record, field, "not a key"), "invalid-key"
            else:
                value, reason = encode(event_type, {**record, "metadata_json": "[1, 2]"}), "invalid-metadata"
            bad.append(Bad(topic_for(settings, event_type), key, value, frozenset({reason})))
        elif kind == "trailing":
            event_type, record = some_valid(i)
            bad.append(Bad(topic_for(settings, event_type), key, encode(event_type, record) + rng.randbytes(3),
                           frozenset({"trailing-bytes"})))
        elif kind == "wrong-topic":
            event_type, record = some_valid(i)
            other = next(t for t in topics.events if type_of[t] != event_type)
            bad.append(Bad(other, key, encode(event_type, record), frozenset({"wrong-topic"})))
        else:  # a key that is not UTF-8, with an empty or absent value
            bad.append(Bad(topic, b"\xff\xfe\x00" + rng.randbytes(8), rng.choice([None, b""]), frozenset({"empty"})))
    # Owners too long for PostgreSQL's index on them (over 1000 bytes of UTF-8).
    for n, owner in enumerate(["o" * 1001, "ö" * 501, "x" * 10_000]):
        run = TaskRun([Asset(f"s3://fuzz/owner/{n}.csv", props("long owner", owners=[owner]))],
                      [Upstream("s3://fuzz/owner/up.csv", "EXPLICIT", props(owners=["team", owner]))])
        for event_type, record in run.events():
            bad.append(Bad(topic_for(settings, event_type), b"s3://fuzz/owner", encode(event_type, record),
                           frozenset({"invalid-text"})))
    # Near the size limit: the dead-letter copy (original + headers) is bigger than the original.
    for n in range(3):
        bad.append(Bad(topics.events[n], b"s3://fuzz/huge.bin", b"\x00" + rng.randbytes(AT_LIMIT - 1),
                       frozenset({"bad-magic"})))
    event_type, record = valid_run(rng, 10**6).events()[0]
    short = len(encode(event_type, {**record, "by": ""}))
    bad.append(Bad(topics.materializations, b"s3://fuzz/huge.bin",
                   encode(event_type, {**record, "by": "\x00" + "y" * (AT_LIMIT - short - 4)}),
                   frozenset({"invalid-text"})))
    return bad


def dead_letter_copies(settings) -> list:
    """Every message of the three dead-letter topics, read to their current ends."""
    consumer = Consumer(settings.kafka_client_config(required={
        "group.id": f"drill-dlq-{uuid.uuid4()}", "enable.auto.commit": False, "fetch.message.max.bytes": 2_000_000}))
    found = []
    try:
        ends = {}
        for topic in settings.topics.events:
            dlq = Topics.dead_letter(topic)
            for p in consumer.list_topics(dlq, timeout=30).topics[dlq].partitions:
                high = consumer.get_watermark_offsets(TopicPartition(dlq, p), timeout=30)[1]
                if high:
                    ends[(dlq, p)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        positions = dict.fromkeys(ends, 0)
        while any(positions[tp] < end for tp, end in ends.items()):
            message = consumer.poll(5)
            assert message is not None, f"could not read the dead-letter topics to their ends: {positions} of {ends}"
            assert message.error() is None, message.error()
            positions[(message.topic(), message.partition())] = message.offset() + 1
            found.append(message)
    finally:
        consumer.close()
    return found


def test_a_thousand_fuzzed_messages_are_dead_lettered_and_the_rest_projected_verbatim(isolated, stack):
    settings = isolated.settings
    migrate(isolated.dsn)
    rng = random.Random(8)
    good_runs = realistic_runs(1500, seed=8) + hostile_runs(rng)
    good = events_of_runs(good_runs)
    bad = fuzzed(settings, rng, BAD_MESSAGES)
    assert len(bad) >= BAD_MESSAGES
    mixed: list[tuple[str, object]] = [("good", e) for e in good] + [("bad", b) for b in bad]
    rng.shuffle(mixed)

    processes = [consume_process(isolated, name) for name in PROJECTIONS]
    try:
        publisher = Publisher(settings)
        for kind, item in mixed:
            if kind == "good":
                publisher.event(*item)  # type: ignore[misc]
            else:
                publisher.raw(item.topic, item.key, item.value)  # type: ignore[union-attr]
        publisher.flush()
        wait_until_projected(isolated, timeout=120, processes=processes)
        for process in processes:
            assert process.poll() is None, f"a consumer crashed on bad input:\n{process_log(process)[-3000:]}"
            process.send_signal(signal.SIGTERM)
        reports = {}
        for name, process in zip(PROJECTIONS, processes, strict=True):
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0, process_log(process)[-3000:]
            reports[name] = json.loads(out)
    finally:
        stop_processes(processes)

    positions = publisher.positions
    placed = list(zip(mixed, positions, strict=True))
    good_published = [(*item, p) for (kind, item), p in placed if kind == "good"]  # type: ignore[misc]
    bad_published = [(item, p) for (kind, item), p in placed if kind == "bad"]
    for name in PROJECTIONS:
        assert reports[name]["dead_letters"] == len(bad), name
        assert reports[name]["events"] == len(good), name

    # Every bad message: a row per projection with an allowed reason, and a copy per projection.
    with psycopg.connect(isolated.dsn) as conn:
        rows = conn.execute('SELECT projection, topic, partition, "offset", reason, detail, dead_letter_topic, '
                            "message_key, message_value FROM dead_letters").fetchall()
    by_position = {(r[0], r[1], r[2], r[3]): r for r in rows}
    assert len(rows) == 2 * len(bad)
    reasons: Counter[str] = Counter()
    for item, p in bad_published:
        for name in PROJECTIONS:
            row = by_position[(name, p.topic, p.partition, p.offset)]
            assert row[4] in item.reasons, (row[4], row[5], item.reasons)
            assert row[5] and row[6] == Topics.dead_letter(p.topic)
            assert ((row[7] or b""), (row[8] or b"")) == ((item.key or b""), (item.value or b""))
            reasons[row[4]] += 1
    assert reasons["invalid-text"] >= 2 * (BAD_MESSAGES // 8)  # the NUL characters, refused by name
    copies = dead_letter_copies(settings)
    assert len(copies) == 2 * len(bad)
    copied: Counter[tuple] = Counter()
    omitted = 0
    for message in copies:
        headers = {k: v.decode() for k, v in message.headers()}
        copied[(headers["assetlog.projection"], headers["assetlog.original.topic"],
                int(headers["assetlog.original.partition"]), int(headers["assetlog.original.offset"]))] += 1
        row = by_position[(headers["assetlog.projection"], headers["assetlog.original.topic"],
                           int(headers["assetlog.original.partition"]), int(headers["assetlog.original.offset"]))]
        assert headers["assetlog.error.reason"] == row[4]
        if "assetlog.value.omitted" in headers:  # too big to copy with the headers: the row has it all
            omitted += 1
            assert message.value() is None and len(row[8]) >= AT_LIMIT - 100
            continue
        assert ((message.key() or b""), (message.value() or b"")) == ((row[7] or b""), (row[8] or b""))
    assert set(copied) == set(by_position) and set(copied.values()) == {1}
    assert omitted == 2 * 4  # the four messages at the size limit, copied by each projection

    # Every valid event projected, the hostile strings verbatim.
    counts = table_counts(isolated.dsn)
    assert counts == {**expected_counts(good_published), "dead_letters": 2 * len(bad)}
    assert dump_tables(isolated.dsn) == uninterrupted_dump(stack, good_published)
    with psycopg.connect(isolated.dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM asset_properties")}
        tasks = {r[0] for r in conn.execute("SELECT task_name FROM lineage_history")}
        payload_tasks = {r[0] for r in conn.execute(  # the whole event: the lean payload and the columns
            f"SELECT {WHOLE_EVENT}->'run'->>'task_name' FROM lineage_history")}
        metadata = [r[0] for r in conn.execute("SELECT metadata FROM assets WHERE metadata IS NOT NULL")]
    for text in HOSTILE:
        assert text in names and text in tasks and text in payload_tasks
        assert any(m.get(text) == text for m in metadata if isinstance(m, dict)), text[:40]
    replay_check(isolated)
