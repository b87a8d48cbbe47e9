"""Per-event isolation: whatever one event holds, it is dead-lettered and both consumers (and replay) go on.

Regression tests for issue 11's findings 1 and 2, which wedged both consumers
for good: a NUL byte in a key (the dead-letter row's detail carried it and could
not be written) and metadata nested 100,000 levels deep (RecursionError out of
batch building).
"""

from __future__ import annotations

import json
import threading

import psycopg
import pytest
from events_factory import Publisher, TaskRun, rows_by_key, topic_for
from psycopg import sql
from replay_support import assetlog, replay

from assetlog.consumers import ProjectionRunner, RunStats
from assetlog.projections import migrate
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA, encode

PROJECTIONS = ("properties", "lineage")


def run_with_deadline(world, projection: str, timeout: float = 60) -> RunStats:
    """Project until caught up; a consumer still running after `timeout` is wedged: fail, not hang."""
    runner = ProjectionRunner(projection, world.settings, until_caught_up=True)
    outcome: list[RunStats | BaseException] = []

    def run() -> None:
        try:
            outcome.append(runner.run())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        runner.stop()
        thread.join(30)
        pytest.fail(f"the {projection} consumer is wedged: not caught up after {timeout}s "
                    f"({runner.stats.retries} retries)")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def publish_between_good_runs(world, bad: list[tuple[str, bytes, bytes]]) -> None:
    """A valid task run, the bad messages, another valid task run (which must be projected)."""
    publisher = Publisher(world.settings)
    for event_type, record in TaskRun(["s3://iso/before.csv"]).events():
        publisher.event(event_type, record)
    for topic, key, value in bad:
        publisher.raw(topic, key, value)
    for event_type, record in TaskRun(["s3://iso/after.csv"], ["s3://iso/before.csv"],
                                      metadata={"s3://iso/after.csv": {"ok": 1}}).events():
        publisher.event(event_type, record)
    publisher.flush()


def dead_letter_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute('SELECT projection, reason, detail FROM dead_letters ORDER BY projection, topic, "offset"'
                            ).fetchall()


@pytest.fixture
def world(isolated):
    migrate(isolated.dsn)
    return isolated


def test_a_nul_in_a_key_is_dead_lettered_and_neither_consumer_nor_replay_wedges(world):
    run = dict(TaskRun(["s3://iso/nul.csv"], ["s3://iso/up.csv"]).events())
    materialization = {**run[MATERIALIZATION], "asset_key": "s3://iso/nul\x00.csv"}
    dependency = {**run[DEPENDENCY], "upstream_key": "s3://iso/up\x00.csv"}
    publish_between_good_runs(world, [
        (topic_for(world.settings, MATERIALIZATION), b"s3://iso/nul\x00.csv", encode(MATERIALIZATION, materialization)),
        (topic_for(world.settings, DEPENDENCY), b"s3://iso/nul.csv", encode(DEPENDENCY, dependency)),
    ])

    for name in PROJECTIONS:
        stats = run_with_deadline(world, name)
        assert (stats.dead_letters, stats.events) == (2, 4), name
    assert "s3://iso/after.csv" in rows_by_key(world.dsn, "assets")
    rows = dead_letter_rows(world.dsn)
    assert [(p, r) for p, r, _d in rows] == [("lineage", "invalid-key")] * 2 + [("properties", "invalid-key")] * 2
    for _projection, _reason, detail in rows:
        assert "\x00" not in detail and "\\x00" in detail, detail  # the NUL shown escaped, never stored raw

    swapped = replay(world, "lineage")
    assert swapped["written"]["lineage"]["dead_letters"] == 2
    check = replay(world, "all", "--check")
    assert check["drift"] is False and check["behind"] == []


def test_metadata_nested_100k_levels_is_dead_lettered_and_the_consumers_go_on(world):
    run = dict(TaskRun(["s3://iso/deep.csv"], metadata={"s3://iso/deep.csv": {"a": 1}}).events())
    depth = 100_000
    deep = '{"a": ' + "[" * depth + "]" * depth + "}"  # about 200 KB
    assert len(deep) > 199_000
    publish_between_good_runs(world, [
        (topic_for(world.settings, METADATA), b"s3://iso/deep.csv", encode(METADATA, {**run[METADATA],
                                                                                      "metadata_json": deep})),
    ])

    for name in PROJECTIONS:
        stats = run_with_deadline(world, name)
        assert (stats.dead_letters, stats.events) == (1, 4), name
    assets = rows_by_key(world.dsn, "assets")
    assert assets["s3://iso/after.csv"]["metadata"] == {"ok": 1}
    rows = dead_letter_rows(world.dsn)
    assert [(p, r) for p, r, _d in rows] == [("lineage", "invalid-metadata"), ("properties", "invalid-metadata")]
    assert "nested" in rows[0][2], rows[0][2]
    check = replay(world, "all", "--check")
    assert check["drift"] is False and check["behind"] == []


def test_check_names_a_consumer_that_is_behind_the_end_of_the_topics(world):
    """A projection stopped short of the end (here: never run after the last events) is reported,
    per projection and partition, with exit status 1, instead of "no drift" at its own offsets."""
    publish_between_good_runs(world, [])
    for name in PROJECTIONS:
        run_with_deadline(world, name)
    publisher = Publisher(world.settings)
    for event_type, record in TaskRun(["s3://iso/later.csv"], metadata={"s3://iso/later.csv": {}}).events():
        publisher.event(event_type, record)
    positions = publisher.flush()
    run_with_deadline(world, "lineage")  # properties stays behind

    result = assetlog(world, "replay", "all", "--check", "--json", "--grace", "0.5")
    assert result.code == 1, (result.stdout[-2000:], result.stderr[-2000:])
    data = json.loads(result.stdout)
    assert data["drift"] is False  # the rows agree with what each consumer read so far
    behind = {(b["projection"], b["topic"], b["partition"]): b for b in data["behind"]}
    assert set(behind) == {("properties", p.topic, p.partition) for p in positions}
    for (_name, topic, partition), item in behind.items():
        end = max(p.offset for p in positions if (p.topic, p.partition) == (topic, partition)) + 1
        assert (item["end"], item["lag"], item["state"]) == (end, 1, "stuck")
    assert result.stderr.strip().splitlines()[-1].startswith("assetlog: properties is behind the end of the topics")


def test_a_batch_the_database_refuses_is_bisected_to_the_events_at_fault(world):
    """PostgreSQL refuses two events' rows in the middle of one batch (a real CHECK constraint, added
    for the test): exactly those two are dead-lettered as `unstorable`, every other event of the
    batch is projected, the consumer and `replay --check` agree, and nothing is retried."""
    with psycopg.connect(world.dsn) as conn:
        conn.execute("ALTER TABLE assets ADD CONSTRAINT refuse_poison CHECK (key NOT LIKE 's3://iso/poison/%')")
    good = [TaskRun([f"s3://iso/good/{i}.csv"], [f"s3://iso/good/{i - 1}.csv"] if i else []) for i in range(40)]
    runs = good[:15] + [TaskRun(["s3://iso/poison/a.csv"])] + good[15:30] + [TaskRun(["s3://iso/poison/b.csv"])] \
        + good[30:]
    publisher = Publisher(world.settings)
    for run in runs:
        for event_type, record in run.events():
            publisher.event(event_type, record)
    publisher.flush()

    stats = run_with_deadline(world, "properties")
    assert (stats.batches, stats.dead_letters, stats.retries) == (1, 2, 0)
    assets = rows_by_key(world.dsn, "assets")
    assert sorted(assets) == sorted({f"s3://iso/good/{i}.csv" for i in range(40)})
    rows = dead_letter_rows(world.dsn)
    assert [r[1] for r in rows] == ["unstorable", "unstorable"]
    assert "refuse_poison" in rows[0][2], rows[0][2]
    assert run_with_deadline(world, "lineage").dead_letters == 0  # its tables take both events
    check = replay(world, "properties", "--check")
    assert check["drift"] is False and check["behind"] == []


def test_a_dependency_whose_keys_are_too_long_to_index_together_is_dead_lettered_not_retried(world):
    """Two keys of 400 four-byte characters fit the key rule (512 characters) but not, together, a
    btree entry of the edge indexes (2704 bytes): PostgreSQL says "program limit exceeded", which was
    retried forever as if the server were unavailable."""
    run = dict(TaskRun(["s3://iso/wide.csv"], ["s3://iso/up.csv"]).events())
    wide = "".join(chr(0x10000 + (i * 7919) % 0xFFFF0) for i in range(400))  # incompressible
    dependency = {**run[DEPENDENCY], "upstream_key": f"s3://{wide}", "downstream_key": f"s3://{wide[::-1]}"}
    publish_between_good_runs(world, [(topic_for(world.settings, DEPENDENCY), b"s3://iso/wide.csv",
                                       encode(DEPENDENCY, dependency))])
    for name in PROJECTIONS:
        stats = run_with_deadline(world, name, timeout=20)
        assert (stats.dead_letters, stats.retries) == (1, 0), name
    assert [r[1] for r in dead_letter_rows(world.dsn)] == ["invalid-key", "invalid-key"]


def test_rows_and_offsets_commit_in_one_transaction_a_failing_offset_write_leaves_no_rows(world, monkeypatch):
    """The offsets step fails after the rows were written (injected with a monkeypatch: a real server
    cannot be made to fail exactly there); no row of the batch may remain, or a restart would apply
    it a second time with its dead letters, or worse, skip past rows never written."""
    publish_between_good_runs(world, [(world.settings.topics.metadata, b"k", b"junk")])
    runner = ProjectionRunner("lineage", world.settings, until_caught_up=True)

    def fail(conn, next_offsets):
        raise ZeroDivisionError("injected: the offsets step fails")

    monkeypatch.setattr(runner.offsets, "save", fail)
    with pytest.raises(ZeroDivisionError, match="injected"):
        runner.run()
    with psycopg.connect(world.dsn) as conn:
        for table in ("lineage_history", "asset_edges", "dead_letters", "consumer_offsets"):
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            assert count == (0,), table
    stats = run_with_deadline(world, "lineage")
    assert (stats.events, stats.dead_letters) == (4, 1)


def test_a_dead_letter_detail_is_storable_whatever_the_message_held():
    """NUL and other controls, bidi marks and lone surrogates are shown escaped, the length is bounded,
    and even an object whose str() raises gives a detail: a dead letter can always be written."""
    from assetlog.consumers.batch import MAX_DETAIL, DeadLetter, storable
    from assetlog.projections import Position

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    letter = DeadLetter(Position("t", 0, 1), None, None, "bad\x00reason",
                        "nul\x00 esc\x1b bidi\u202e lone\ud800 ok é😀" + "x" * 5000)
    assert letter.reason == "bad\\x00reason"
    assert letter.detail.startswith("nul\\x00 esc\\x1b bidi\\u202e lone\\ud800 ok é😀")
    assert len(letter.detail) == MAX_DETAIL and letter.detail.endswith("…")
    letter.detail.encode("utf-8")  # valid UTF-8: no lone surrogate left
    assert storable(Hostile()) == "<Hostile>"
    assert DeadLetter(Position("t", 0, 2), None, None, "", "").detail == "(no detail)"


def test_a_bisected_batch_retried_after_an_outage_copies_each_dead_letter_once(world, monkeypatch):
    """After bisecting found the poison, the batch's commit fails on infrastructure (injected once in
    the offsets step: a real server cannot be made to fail exactly there) and is retried: the retry
    must not meet the poison again, nor copy its dead letter to the `.dlq` topic a second time."""
    from test_consumer_poison import dead_letter_topic_sizes

    with psycopg.connect(world.dsn) as conn:
        conn.execute("ALTER TABLE assets ADD CONSTRAINT refuse_poison CHECK (key NOT LIKE 's3://iso/poison/%')")
    publish_between_good_runs(world, [
        (topic_for(world.settings, MATERIALIZATION), b"s3://iso/poison/a.csv",
         encode(MATERIALIZATION, dict(TaskRun(["s3://iso/poison/a.csv"]).events())[MATERIALIZATION]))])
    runner = ProjectionRunner("properties", world.settings, until_caught_up=True)
    original, calls = runner.offsets.save, []

    def fail_once(conn, next_offsets):
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.OperationalError("injected: server closed the connection unexpectedly")
        return original(conn, next_offsets)

    monkeypatch.setattr(runner.offsets, "save", fail_once)
    stats = runner.run()
    assert (stats.dead_letters, stats.retries, stats.events, len(calls)) == (1, 1, 4, 2)
    assert [r[1] for r in dead_letter_rows(world.dsn)] == ["unstorable"]
    assert dead_letter_topic_sizes(world.settings) == {f"{world.settings.topics.materializations}.dlq": 1}
    assert "s3://iso/after.csv" in rows_by_key(world.dsn, "assets")
