"""`assetlog replay`: rebuild into shadow tables and swap them in with zero downtime."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
from events_factory import Publisher, dump_tables, end_offsets, publish
from query_world import reader_dsn
from replay_support import (
    LiveConsumer,
    assetlog,
    realistic_runs,
    replay,
    second_database,
    stored_offsets,
)

from assetlog.consumers import run_until_caught_up
from assetlog.projections import PROJECTION_TABLES, migrate
from assetlog.projections.shadow import definition
from assetlog.query import LineageStore

TABLES = ("asset_properties", "assets", "lineage_history", "asset_edges")


def consume_all(world) -> None:
    for name in ("properties", "lineage"):
        run_until_caught_up(name, world.settings)


def test_readers_never_see_an_empty_or_partial_table_during_a_replay(isolated):
    migrate(isolated.dsn)
    publish(isolated.settings, realistic_runs(8000))
    consume_all(isolated)
    with psycopg.connect(isolated.dsn) as conn:
        expected = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        key = conn.execute("SELECT downstream_key FROM asset_edges GROUP BY 1 ORDER BY count(*) DESC, 1 "
                           "LIMIT 1").fetchone()[0]
    reader = reader_dsn(isolated.dsn)  # the least-privileged role: its grants must survive the swap
    with LineageStore(reader) as store:
        expected_graph = store.upstream(key, depth=3).model_dump()
        expected_asset = store.asset(key).model_dump()
    assert len(expected_graph["nodes"]) > 3 and min(expected.values()) > 100

    stop = threading.Event()
    reads: list[tuple[float, str]] = []
    wrong: list[str] = []

    def count_in_a_loop() -> None:
        try:
            with psycopg.connect(reader, autocommit=True) as conn:
                while not stop.is_set():
                    for table in TABLES:
                        n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                        reads.append((time.monotonic(), table))
                        if n != expected[table]:
                            wrong.append(f"{table}: {n} rows, not {expected[table]}")
        except Exception as exc:  # a failed read is a failed test
            wrong.append(f"count: {exc!r}")

    def query_in_a_loop() -> None:
        try:
            with LineageStore(reader) as store:
                while not stop.is_set():
                    if store.upstream(key, depth=3).model_dump() != expected_graph:
                        wrong.append("lineage graph differs")
                    if store.asset(key).model_dump() != expected_asset:
                        wrong.append("asset details differ")
                    reads.append((time.monotonic(), "store"))
        except Exception as exc:
            wrong.append(f"store: {exc!r}")

    threads = [threading.Thread(target=f, daemon=True) for f in (count_in_a_loop, query_in_a_loop)]
    for thread in threads:
        thread.start()
    while len(reads) < 20 and not wrong:
        time.sleep(0.01)
    started = time.monotonic()
    summary = replay(isolated, "all")
    ended = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(30)

    assert wrong == []
    during = [what for when, what in reads if started < when < ended]
    assert {"store", *TABLES} <= set(during), "the readers were not reading during the replay"
    assert summary["generations"] == {"properties": 1, "lineage": 1}
    with psycopg.connect(isolated.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'assetlog_%'").fetchone()[0] == 0


def test_a_live_consumer_during_replay_and_swap_loses_and_duplicates_nothing(isolated):
    migrate(isolated.dsn)
    published = publish(isolated.settings, realistic_runs(4000, seed=11))
    stop = threading.Event()
    streamed: list = []

    def stream() -> None:  # a producer that keeps going before, during and after the swap
        wave = 0
        while not stop.is_set():
            wave += 1
            streamed.extend(publish(isolated.settings, realistic_runs(150, seed=1000 + wave, start=50_000 + wave * 500)))
            time.sleep(0.02)

    producer = threading.Thread(target=stream, daemon=True)
    with LiveConsumer(isolated, "properties", batch_size=200) as properties, \
            LiveConsumer(isolated, "lineage", batch_size=200) as lineage:
        producer.start()
        for live in (properties, lineage):
            live.wait_for(isolated.dsn, end_offsets(p for _t, _r, p in published))
        summary = replay(isolated, "all", "--workers", "2")
        time.sleep(0.5)  # the producer and the consumers go on after the swap
        stop.set()
        producer.join(30)
        everything = published + streamed
        for live in (properties, lineage):
            live.wait_for(isolated.dsn, end_offsets(p for _t, _r, p in everything))
        resyncs = {live.runner.projection.name: live.runner.stats.resyncs for live in (properties, lineage)}

    assert summary["generations"] == {"properties": 1, "lineage": 1} and summary["workers"] == 2
    assert resyncs["properties"] >= 1 and resyncs["lineage"] >= 1, resyncs  # their in-flight batches were fenced
    with psycopg.connect(isolated.dsn) as conn:
        history = conn.execute("SELECT event_id::text, kafka_topic, kafka_partition, kafka_offset "
                               "FROM lineage_history").fetchall()
    assert len(history) == len(everything)  # nothing lost, nothing twice
    assert {row[0] for row in history} == {r["event_id"] for _t, r, _p in everything}
    assert {(row[1], row[2], row[3]) for row in history} == {(p.topic, p.partition, p.offset) for _t, _r, p in everything}
    check = replay(isolated, "all", "--check")  # and every table is what the topics say
    assert check["drift"] is False and check["messages"] == len(everything)


def test_replay_into_an_empty_database_equals_an_uninterrupted_deployment(stack, isolated):
    migrate(isolated.dsn)
    published = publish(isolated.settings, realistic_runs(3000, seed=21))
    poison = Publisher(isolated.settings)
    poison.raw(isolated.settings.topics.dependencies, b"s3://x", b"\x00garbage")
    poison.flush()
    consume_all(isolated)
    with second_database(stack, isolated) as fresh:
        assert assetlog(fresh, "db", "migrate").code == 0
        done = assetlog(fresh, "replay", "all")
        assert done.code == 0, done.stderr
        assert done.stdout.startswith(f"replay all: {len(published) + 1:,} messages read") and done.stderr == ""

        assert dump_tables(fresh.dsn) == dump_tables(isolated.dsn)  # row for row, kafka positions included
        for name in ("properties", "lineage"):
            assert stored_offsets(fresh.dsn, name) == stored_offsets(isolated.dsn, name)
        letters = 'SELECT projection, topic, partition, "offset", reason, detail, message_value FROM dead_letters ' \
                  "ORDER BY 1, 2, 3, 4"
        with psycopg.connect(fresh.dsn) as a, psycopg.connect(isolated.dsn) as b:
            assert a.execute(letters).fetchall() == b.execute(letters).fetchall() != []
            for table in [t for tables in PROJECTION_TABLES.values() for t in tables]:
                assert definition(a, "public", table) == definition(b, "public", table)  # indexes, grants, ...
            # Planner statistics came with the swapped tables (the replay's ANALYZE: autovacuum never
            # analyzes a partitioned table such as lineage_history).
            analyzed = a.execute("SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = 'public' "
                                 "AND tablename = ANY(%s)", (list(TABLES),)).fetchall()
            assert {row[0] for row in analyzed} == set(TABLES)

        # The rebuilt deployment's consumers carry on from where the replay ended.
        more = publish(isolated.settings, realistic_runs(500, seed=22, start=90_000))
        for name in ("properties", "lineage"):
            assert run_until_caught_up(name, fresh.settings).messages == len(more)
        consume_all(isolated)
        assert dump_tables(fresh.dsn) == dump_tables(isolated.dsn)


def test_replay_lineage_since_rereads_only_the_tail_of_the_history(isolated):
    migrate(isolated.dsn)
    first = publish(isolated.settings, realistic_runs(1000, seed=31))
    time.sleep(0.05)
    since = datetime.now(UTC)  # Kafka timestamps are the producer's clock, in milliseconds
    time.sleep(0.05)
    second = publish(isolated.settings, realistic_runs(500, seed=32, start=70_000))
    consume_all(isolated)
    before = dump_tables(isolated.dsn)

    checked = replay(isolated, "lineage", "--since", since.isoformat(), "--check")
    assert (checked["drift"], checked["messages"], checked["seeded_history_rows"]) == (False, len(second), len(first))
    summary = replay(isolated, "lineage", "--since", since.isoformat())
    assert (summary["messages"], summary["seeded_history_rows"]) == (len(second), len(first))
    assert dump_tables(isolated.dsn) == before
    everything = replay(isolated, "lineage", "--since", "2000-01-01")
    assert (everything["messages"], everything["seeded_history_rows"]) == (len(first) + len(second), 0)
    assert dump_tables(isolated.dsn) == before

    refused = assetlog(isolated, "replay", "properties", "--since", since.isoformat())
    assert refused.code == 1 and refused.stderr.startswith("assetlog: --since only applies to `replay lineage`")
    bad = assetlog(isolated, "replay", "lineage", "--since", "yesterday")
    assert bad.code == 1 and bad.stderr.strip().splitlines() == [
        "assetlog: --since: 'yesterday' is not an ISO-8601 time; use e.g. 2026-11-20T10:00:00Z or 2026-11-20"]


def test_replay_refuses_to_swap_tables_a_view_depends_on(isolated):
    migrate(isolated.dsn)
    publish(isolated.settings, realistic_runs(200, seed=41))
    consume_all(isolated)
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("CREATE VIEW failed_assets AS SELECT key FROM assets WHERE last_status = 'FAILED'")
    before = dump_tables(isolated.dsn)
    refused = assetlog(isolated, "replay", "properties")
    assert refused.code == 1
    assert refused.stderr.startswith("assetlog: failed_assets depend on the tables a replay swaps")
    assert dump_tables(isolated.dsn) == before
    assert replay(isolated, "lineage")["generations"] == {"lineage": 1}  # other tables: fine
    assert replay(isolated, "properties", "--check")["drift"] is False  # a check swaps nothing: fine
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("DROP VIEW failed_assets")
        conn.execute("CREATE TABLE notes (key text REFERENCES assets (key), note text)")
    refused = assetlog(isolated, "replay", "properties")
    assert refused.code == 1 and refused.stderr.startswith("assetlog: notes_key_fkey on notes depend on")
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("DROP TABLE notes")
    assert replay(isolated, "properties")["generations"] == {"properties": 1}
    assert dump_tables(isolated.dsn) == before
