"""`assetlog db warm`: the read path's relations loaded into shared buffers, in priority order and within
budget, on the real PostgreSQL; and the stack's memory settings that give them room."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
from query_world import reader_dsn

from assetlog.compose.postgres import memory_options
from assetlog.config import ENV_POSTGRES_DSN
from assetlog.projections import migrate
from assetlog.projections.warm import READ_PATH, plan


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def _blocks_read(conn: psycopg.Connection) -> dict[str, int]:
    """Buffer reads (hits and misses) PostgreSQL counted per read-path relation so far: pg_prewarm's
    buffer mode reads every block through the buffer manager, which counts each one here."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT relname, heap_blks_read + heap_blks_hit FROM pg_statio_user_tables WHERE relname = ANY(%(names)s) "
        "UNION ALL SELECT indexrelname, idx_blks_read + idx_blks_hit FROM pg_statio_user_indexes "
        "WHERE indexrelname = ANY(%(names)s)", {"names": [name for name, *_ in READ_PATH]}).fetchall()
    return dict(rows)


def test_warm_loads_every_read_path_relation_and_a_role_without_the_extension_gets_one_line(isolated):
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        # Rows enough that each relation has pages beyond the metapage; then push them out of the cache.
        conn.execute("INSERT INTO assets (key, first_seen, last_seen) SELECT 's3://warm/' || i, now(), now() "
                     "FROM generate_series(1, 3000) i")
        conn.execute("INSERT INTO asset_properties (key, name, event_time, event_id) "
                     "SELECT 's3://warm/' || i, 'n' || i, now(), gen_random_uuid() FROM generate_series(1, 3000) i")
        conn.execute("INSERT INTO asset_edges (upstream_key, downstream_key, declared, first_seen, last_seen, "
                     "last_event_id) SELECT 's3://warm/' || i, 's3://warm/' || (i + 1), 'explicit', now(), now(), "
                     "gen_random_uuid() FROM generate_series(1, 3000) i")
        sizes = dict(conn.execute(
            "SELECT relname, pg_relation_size(oid) / current_setting('block_size')::int FROM pg_class "
            "WHERE relname = ANY(%s) AND relnamespace = 'public'::regnamespace",
            ([name for name, *_ in READ_PATH],)).fetchall())
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm'").fetchone() is None

    # The read-only role may not create the extension: one clear line, non-zero, nothing half done.
    as_reader = isolated.env(**{ENV_POSTGRES_DSN: reader_dsn(isolated.dsn)})
    refused = _cli(as_reader, "db", "warm")
    assert refused.returncode != 0 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "pg_prewarm" in refused.stderr and "Traceback" not in refused.stderr

    # The rows just written are still cached, so what the test checks is that every block went through
    # the buffer manager (PostgreSQL's own counters; a backend reports them when it ends).
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        before = _blocks_read(conn)
    done = _cli(isolated.env(), "db", "warm", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["relation"] for r in result["relations"]] == [name for name, *_ in READ_PATH]
    assert all(r["loaded"] for r in result["relations"])
    assert {r["relation"]: r["blocks"] for r in result["relations"]} == sizes
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        after = _blocks_read(conn)
    assert all(after[name] - before[name] >= blocks for name, blocks in sizes.items()), (before, after, sizes)

    # Once the extension exists, the read-only role can warm too (pg_prewarm needs only SELECT).
    again = _cli(as_reader, "db", "warm", "--json")
    assert again.returncode == 0, again.stderr


def test_the_plan_keeps_the_priority_order_and_skips_what_does_not_fit():
    sizes = [("edges_up", "", 60), ("edges_down", "", 60), ("assets_pkey", "", 10), ("assets", "", 30)]
    assert [load for *_, load in plan(sizes, 100)] == [True, False, True, True]
    assert [load for *_, load in plan(sizes, 1000)] == [True, True, True, True]
    assert [load for *_, load in plan(sizes, 5)] == [False, False, False, False]


def test_memory_follows_the_machine_within_bounds_and_the_variable_overrides():
    gib = 2**30
    assert memory_options(24 * gib) == ["-c shared_buffers=6144MB", "-c effective_cache_size=12288MB"]
    assert memory_options(256 * 2**20)[0] == "-c shared_buffers=128MB"
    assert memory_options(256 * gib)[0] == "-c shared_buffers=8192MB"
    assert memory_options(24 * gib, "1GB")[0] == "-c shared_buffers=1GB"
