"""`assetlog db migrate`: idempotent, recorded, documented tables, append-only history."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import psycopg
import pytest
from events_factory import Asset, TaskRun, Upstream, apply_directly, at, props
from psycopg import sql

from assetlog.projections import MigrationError, migrate, shipped_migrations
from assetlog.projections.migrate import require_migrated

OUR_TABLES = ("asset_properties", "assets", "asset_edges", "lineage_history", "consumer_offsets", "dead_letters",
              "schema_migrations")


# An asset_edges row as the lineage projection of a version before 0010 wrote it.
_EDGE = ("INSERT INTO asset_edges (upstream_key, downstream_key, declared, first_seen, last_seen, last_event_id) "
         "VALUES (%s, %s, %s, now(), now(), gen_random_uuid())")


def _migrating_until_it_waits(isolated, migrations=None) -> tuple[threading.Thread, list[object]]:
    """`migrate` started in a thread, returned once a session of the database waits for a lock (the
    migrator, behind a writer the test holds open); the result lands in the list."""
    done: list[object] = []
    migrator = threading.Thread(target=lambda: done.append(migrate(isolated.dsn, migrations)), daemon=True)
    migrator.start()
    with psycopg.connect(isolated.dsn, autocommit=True) as watcher:
        while not watcher.execute("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                  "AND datname = current_database())").fetchone()[0]:
            assert migrator.is_alive(), done
    return migrator, done


def _cli(isolated, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=isolated.env(), capture_output=True,
                          text=True, timeout=60)


def test_migrate_is_idempotent_and_records_the_versions_it_applied(isolated):
    versions = [m.version for m in shipped_migrations()]
    first = _cli(isolated, "db", "migrate", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"applied": versions, "already_applied": [], "version": versions[-1]}
    second = _cli(isolated, "db", "migrate", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"applied": [], "already_applied": versions, "version": versions[-1]}
    human = _cli(isolated, "db", "migrate")
    assert human.stdout.strip() == f"nothing to do; schema version {versions[-1]}"
    with psycopg.connect(isolated.dsn) as conn:
        rows = conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()
    assert [(v, n, c) for v, n, c in rows] == [(m.version, m.name, m.checksum) for m in shipped_migrations()]


def test_every_table_and_column_is_commented(isolated):
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn) as conn:
        for name in OUR_TABLES:
            comment = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (name,)).fetchone()[0]
            assert comment and len(comment) > 20, f"table {name} has no comment"
            missing = conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                "AND NOT attisdropped AND col_description(attrelid, attnum) IS NULL", (name,)).fetchall()
            assert missing == [], f"{name}: columns without a comment: {missing}"


def test_an_edited_applied_migration_is_refused(isolated):
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="never edit an applied migration"):
        migrate(isolated.dsn)
    result = _cli(isolated, "db", "migrate")
    assert result.returncode == 1
    assert result.stderr.startswith("assetlog: migration 0001_") and "Traceback" not in result.stderr


def test_an_unmigrated_database_is_named_with_the_fix(isolated):
    with psycopg.connect(isolated.dsn) as conn, pytest.raises(MigrationError, match="run `assetlog db migrate`"):
        require_migrated(conn)
    result = _cli(isolated, "consume", "properties", "--until-caught-up")
    assert result.returncode == 1
    assert "run `assetlog db migrate` first" in result.stderr and "Traceback" not in result.stderr


def test_lineage_history_refuses_update_delete_and_truncate(isolated):
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn) as conn:
        apply_directly(conn, "lineage", TaskRun(["s3://bucket/a.csv"], ["s3://bucket/b.csv"]).events())
        for statement in ("UPDATE lineage_history SET asset_key = 's3://bucket/forged.csv'",
                          "DELETE FROM lineage_history",
                          "TRUNCATE lineage_history"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="lineage_history is append-only"):
                with conn.transaction():
                    conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM lineage_history").fetchone()[0] == 2
        assert conn.execute(
            "SELECT count(*) FROM lineage_history WHERE asset_key = 's3://bucket/forged.csv'").fetchone()[0] == 0


def test_migration_0006_builds_its_index_without_blocking_new_edge_writes(isolated):
    """A plain CREATE INDEX would hold a SHARE lock on asset_edges for the whole build, and every
    lineage batch's edge upsert would queue behind it; 0006 builds concurrently (online_indexes.py).

    A writer's open transaction keeps the build waiting; meanwhile another writer must still get in."""

    migrate(isolated.dsn, [m for m in shipped_migrations() if m.version <= 5])
    with psycopg.connect(isolated.dsn) as slow_writer, psycopg.connect(isolated.dsn, autocommit=True) as writer:
        insert = ("INSERT INTO asset_edges (upstream_key, downstream_key, declared, first_seen, last_seen, "
                  "last_event_id) VALUES (%s, %s, 'explicit', now(), now(), gen_random_uuid())")
        slow_writer.execute(insert, ("s3://a", "s3://b"))  # uncommitted: the build waits for it
        migrator, done = _migrating_until_it_waits(isolated, [m for m in shipped_migrations() if m.version <= 6])
        writer.execute("SET lock_timeout = '2s'")
        writer.execute(insert, ("s3://c", "s3://d"))  # a plain CREATE INDEX makes this time out
        slow_writer.commit()
        migrator.join(timeout=60)
    assert done and done[0].applied == [6]
    with psycopg.connect(isolated.dsn) as conn:
        definition = conn.execute("SELECT pg_get_indexdef('asset_edges_upstream'::regclass)").fetchone()[0]
        assert 'COLLATE "C"' in definition
        assert conn.execute("SELECT to_regclass('asset_edges_upstream_code_points')").fetchone()[0] is None


def test_migration_0007_sets_its_fillfactors_while_a_writer_holds_its_tables(isolated):
    """0007 only records a storage parameter (SHARE UPDATE EXCLUSIVE), so it does not wait for a batch
    that is writing assets, asset_properties and asset_edges (a rewrite of the tables would)."""

    migrate(isolated.dsn, [m for m in shipped_migrations() if m.version <= 6])
    with psycopg.connect(isolated.dsn) as writer:
        apply_directly(writer, "properties", TaskRun([Asset("s3://a", props("A"))], ["s3://b"]).events())
        writer.execute(_EDGE, ("s3://b", "s3://a", "inferred"))  # uncommitted (as a lineage batch of that version)
        done: list[object] = []
        up_to_7 = [m for m in shipped_migrations() if m.version <= 7]
        migrator = threading.Thread(target=lambda: done.append(migrate(isolated.dsn, up_to_7)), daemon=True)
        migrator.start()
        migrator.join(timeout=30)
        assert done and done[0].applied == [7], "the migration waited for the writer's transaction"
        writer.commit()
    with psycopg.connect(isolated.dsn) as conn:
        options = dict(conn.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)",
                                    (["assets", "asset_properties", "asset_edges"],)).fetchall())
    assert options == dict.fromkeys(("assets", "asset_properties", "asset_edges"), ["fillfactor=70"])


def test_keys_seen_again_are_updated_in_place(isolated):
    """With room left on each page (0007), a key's row updated by a later run stays on its page: a HOT
    update, which adds no index entries (the trigram GIN indexes are the dearest). With pages filled to
    100% (before 0007) a full page has no room and almost every row moves to another page."""
    migrate(isolated.dsn)
    keys = [f"s3://lake/layer/table_{i:03}.parquet" for i in range(150)]
    with psycopg.connect(isolated.dsn) as conn:
        for seconds in (0, 60):
            run = TaskRun([Asset(key, props("A table", "Rows of the lake", ["data"])) for key in keys],
                          [Upstream("s3://lake/source.csv")], time=at(seconds))
            for name in ("properties", "lineage"):
                apply_directly(conn, name, run.events())
            conn.commit()
            blocks = {}
            for table, key in (("assets", "key"), ("asset_properties", "key"), ("asset_edges", "downstream_key")):
                blocks[table] = dict(conn.execute(sql.SQL("SELECT {}, (ctid::text::point)[0] FROM {}").format(
                    sql.Identifier(key), sql.Identifier(table))).fetchall())
            if seconds == 0:
                before = blocks
        assert conn.execute("SELECT count(*) FROM assets WHERE last_seen = %s", (at(60),)).fetchone()[0] == 151
    for table, rows in blocks.items():
        stayed = sum(1 for key, block in rows.items() if before[table].get(key) == block)
        assert stayed >= len(rows) // 4, f"{table}: only {stayed} of {len(rows)} rows were updated in place"


def test_migration_0008_builds_its_hash_indexes_while_assets_are_written_and_again_after_an_interruption(isolated):
    """0008's indexes are built concurrently (online_indexes.py): a batch that holds `assets` open keeps
    the build waiting, and another writer still gets in. A build cancelled while it waits leaves an
    invalid index behind, as PostgreSQL does; the next `migrate` drops it and builds it anew."""

    up_to_7 = [m for m in shipped_migrations() if m.version <= 7]
    migrate(isolated.dsn, up_to_7)
    insert = "INSERT INTO assets (key, first_seen, last_seen) VALUES (%s, now(), now())"
    with psycopg.connect(isolated.dsn) as slow_writer:
        slow_writer.execute(insert, ("s3://slow",))  # uncommitted: a concurrent build waits for it
        impatient = psycopg.connect(isolated.dsn, options="-c statement_timeout=1500")
        with impatient, pytest.raises(psycopg.errors.QueryCanceled):
            migrate(impatient)
        with psycopg.connect(isolated.dsn, autocommit=True) as conn:
            assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'assets_key_hash'::regclass"
                                ).fetchone()[0] is False
        migrator, done = _migrating_until_it_waits(isolated)
        with psycopg.connect(isolated.dsn, autocommit=True) as writer:
            writer.execute("SET lock_timeout = '2s'")
            writer.execute(insert, ("s3://fast",))  # a plain CREATE INDEX makes this time out
        slow_writer.commit()
        migrator.join(timeout=60)
    assert done and done[0].applied[0] == 8  # and those after it
    with psycopg.connect(isolated.dsn) as conn:
        indexes = conn.execute(
            "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid), obj_description(i.indexrelid, 'pg_class') "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE '%%_key_hash' ORDER BY 1"
        ).fetchall()
        assert [(name, valid) for name, valid, _, _ in indexes] == [
            ("asset_properties_key_hash", True), ("assets_key_hash", True)]
        assert all("USING hash (key)" in definition and "migration 0008" in comment
                   for _, _, definition, comment in indexes)
        # On three rows the planner prefers the primary key; without it (rolled back), the hash index
        # serves the lookup. At 1M assets it is chosen over the primary key (bench/README.md).
        conn.execute("SET enable_seqscan = off")
        conn.execute("ALTER TABLE assets DROP CONSTRAINT assets_pkey")
        plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN SELECT last_status FROM assets WHERE key = %s", ("s3://fast",)).fetchall())
        conn.rollback()
        assert "Index Scan using assets_key_hash" in plan, plan


def test_migrators_started_together_both_succeed_while_one_builds_indexes_concurrently(isolated):
    """Several consumers may start at once on a database that needs 0008 (CREATE INDEX CONCURRENTLY, which
    waits for every running transaction): the others wait for the migrators' lock without running a
    statement, so no deadlock fails one of them."""

    migrate(isolated.dsn, [m for m in shipped_migrations() if m.version <= 7])
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:  # rows, so the concurrent builds take a while
        conn.execute("INSERT INTO assets (key, first_seen, last_seen) SELECT 's3://b/' || n, now(), now() "
                     "FROM generate_series(1, 200000) AS n")
    outcomes: list[object] = []

    def one() -> None:
        try:
            outcomes.append(migrate(isolated.dsn).applied)
        except Exception as exc:  # what the test reports
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(map(str, outcomes)) == sorted(map(str, [[], [], [m.version for m in shipped_migrations()
                                                                  if m.version > 7]])), outcomes


def test_migration_0010_fills_explicit_since_between_writers_and_swaps_in_the_indexes(isolated, monkeypatch):
    """0010 adds a column, which needs asset_edges to itself for an instant: a batch holding the table open
    keeps the step waiting, but the step asks with a short lock_timeout, so another writer is not queued
    behind it for long. Then the explicit edges stored before get their first explicit event's time from
    the history (one edge per batch here, so the batches' paging is exercised); an explicit edge without
    explicit events in the history stays "not known"; the covering indexes carry the times."""

    from assetlog.projections import explicit_since_migration

    monkeypatch.setattr(explicit_since_migration, "BATCH", 1)
    migrate(isolated.dsn, [m for m in shipped_migrations() if m.version <= 9])
    history = [("s3://a", "s3://b", 1, "INFERRED"), ("s3://a", "s3://b", 3, "EXPLICIT"),
               ("s3://a", "s3://b", 2, "EXPLICIT"), ("s3://c", "s3://d", 1, "INFERRED"),
               ("s3://e", "s3://f", 4, "EXPLICIT")]
    with psycopg.connect(isolated.dsn) as conn:
        conn.cursor().executemany(
            "INSERT INTO lineage_history (event_id, event_type, event_time, asset_key, upstream_key, status, "
            "materialization_event_id, task_run_id, task_name, payload) VALUES (gen_random_uuid(), 'dependency', "
            "%s, %s, %s, 'SUCCEEDED', gen_random_uuid(), gen_random_uuid(), 't', %s)",
            [(at(seconds), down, up, psycopg.types.json.Jsonb({"declared": declared}))
             for up, down, seconds, declared in history])
        for up, down, declared in (("s3://a", "s3://b", "explicit"), ("s3://c", "s3://d", "inferred"),
                                   ("s3://e", "s3://f", "explicit"), ("s3://g", "s3://h", "explicit")):
            conn.execute(_EDGE, (up, down, declared))
    with psycopg.connect(isolated.dsn) as slow_writer:
        slow_writer.execute(_EDGE, ("s3://x", "s3://y", "explicit"))  # uncommitted: the step waits for it
        migrator, done = _migrating_until_it_waits(isolated)
        with psycopg.connect(isolated.dsn, autocommit=True) as writer:
            writer.execute("SET lock_timeout = '2s'")
            writer.execute(_EDGE, ("s3://c", "s3://z", "inferred"))
        assert migrator.is_alive(), "the step did not wait for the open batch"
        slow_writer.commit()
        migrator.join(timeout=60)
    assert done and done[0].applied == [10]
    with psycopg.connect(isolated.dsn) as conn:
        apply_directly(conn, "lineage", TaskRun([Asset("s3://j")], [Upstream("s3://i", "EXPLICIT")],
                                                time=at(5)).events())
        rows = conn.execute("SELECT upstream_key, downstream_key, explicit_since FROM asset_edges ORDER BY 1, 2"
                            ).fetchall()
        indexes = dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'asset_edges'").fetchall())
    assert rows == [("s3://a", "s3://b", at(2)), ("s3://c", "s3://d", None), ("s3://c", "s3://z", None),
                    ("s3://e", "s3://f", at(4)), ("s3://g", "s3://h", None), ("s3://i", "s3://j", at(5)),
                    ("s3://x", "s3://y", None)]
    assert sorted(indexes) == ["asset_edges_downstream", "asset_edges_pkey", "asset_edges_upstream"]
    for name in ("asset_edges_downstream", "asset_edges_upstream"):
        assert indexes[name].endswith("INCLUDE (declared, first_seen, explicit_since)"), indexes[name]


def test_migration_0010_interrupted_after_the_fill_finishes_when_run_again(isolated, monkeypatch):
    """An interruption between the step's parts (here, the index build failing, which a real server gives
    only by chance: mocked, the one fault in this test) leaves the column and the filled times, the
    version unrecorded; the next `migrate` takes it from there."""
    from assetlog.projections import explicit_since_migration

    migrate(isolated.dsn, [m for m in shipped_migrations() if m.version <= 9])
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute(
            "INSERT INTO lineage_history (event_id, event_type, event_time, asset_key, upstream_key, status, "
            "materialization_event_id, task_run_id, task_name, payload) VALUES (gen_random_uuid(), 'dependency', "
            "%s, 's3://b', 's3://a', 'SUCCEEDED', gen_random_uuid(), gen_random_uuid(), 't', %s)",
            (at(7), psycopg.types.json.Jsonb({"declared": "EXPLICIT"})))
        conn.execute(_EDGE, ("s3://a", "s3://b", "explicit"))

    def interrupted(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(explicit_since_migration, "build_concurrently", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn) as conn:
        assert conn.execute("SELECT explicit_since FROM asset_edges").fetchall() == [(at(7),)]
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (9,)
    monkeypatch.undo()
    assert migrate(isolated.dsn).applied == [10]
    with psycopg.connect(isolated.dsn) as conn:
        assert conn.execute("SELECT explicit_since FROM asset_edges").fetchall() == [(at(7),)]
        assert "explicit_since" in conn.execute("SELECT pg_get_indexdef('asset_edges_upstream'::regclass)").fetchone()[0]
