"""Partitioned `lineage_history`: months on demand, DEFAULT for the rest, append-only on every partition,
an event id met again with another time dead-lettered, lookups that prune, and `assetlog db partitions`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from events_factory import EPOCH, Publisher, TaskRun, apply_directly

from assetlog.consumers import run_until_caught_up
from assetlog.projections import migrate
from assetlog.projections.partitions import MonthlyPartitions, add_months, list_partitions, month_of
from assetlog.query.catalog import _DETAILS_NOW  # the query behind `assetlog asset KEY` and the asset page
from assetlog.schemas import MATERIALIZATION


def _cli(isolated, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=isolated.env(), capture_output=True,
                          text=True, timeout=60)


def _where(conn: psycopg.Connection) -> dict[str, str]:
    """Which partition holds each asset key's rows."""
    return dict(conn.execute("SELECT DISTINCT asset_key, tableoid::regclass::text FROM lineage_history").fetchall())


@pytest.fixture
def world(isolated):
    migrate(isolated.dsn)
    return isolated


def test_months_are_created_on_demand_and_far_times_go_to_default(world):
    far_future = add_months(month_of(datetime.now(UTC)), 24)
    runs = [TaskRun(["s3://b/epoch.csv"], time=EPOCH),
            TaskRun(["s3://b/old.csv"], time=datetime(1990, 5, 17, tzinfo=UTC)),
            TaskRun(["s3://b/future.csv"], time=far_future + timedelta(days=3)),
            TaskRun(["s3://b/epoch.csv"], time=EPOCH + timedelta(days=40))]
    with psycopg.connect(world.dsn) as conn:
        for run in runs:
            apply_directly(conn, "lineage", run.events())
        where = _where(conn)
        names = [p.name for p in list_partitions(conn, "public")]
    assert where == {"s3://b/epoch.csv": where["s3://b/epoch.csv"], "s3://b/old.csv": "lineage_history_default",
                     "s3://b/future.csv": "lineage_history_default"}
    assert "lineage_history_2025_01" in names and "lineage_history_2025_02" in names
    assert names[-1] == "lineage_history_default"
    with psycopg.connect(world.dsn, options="-c TimeZone=America/New_York") as conn:  # months are UTC months
        first = list_partitions(conn, "public")[0].as_dict()
    assert (first["name"], first["from"]) == ("lineage_history_2025_01", "2025-01-01T00:00:00+00:00")
    with psycopg.connect(world.dsn) as conn:
        months = conn.execute("SELECT DISTINCT tableoid::regclass::text FROM lineage_history "
                              "WHERE asset_key = 's3://b/epoch.csv'").fetchall()
    assert sorted(m[0] for m in months) == ["lineage_history_2025_01", "lineage_history_2025_02"]


def test_writers_create_the_next_month_ahead_in_the_last_week_of_a_month(world):
    partitions = MonthlyPartitions(None)
    with psycopg.connect(world.dsn) as conn:
        assert partitions.ensure(conn, {EPOCH}, now=datetime(2031, 3, 20, tzinfo=UTC)) == [EPOCH]
        assert partitions.ensure(conn, {EPOCH}, now=datetime(2031, 3, 26, tzinfo=UTC)) == [
            datetime(2031, 4, 1, tzinfo=UTC)]
        assert partitions.ensure(conn, {EPOCH}, now=datetime(2031, 3, 27, tzinfo=UTC)) == []  # known: no query
        conn.commit()
        names = [p.name for p in list_partitions(conn, "public")]
    assert names == ["lineage_history_2025_01", "lineage_history_2031_04", "lineage_history_default"]


def test_every_partition_refuses_update_delete_and_truncate_also_those_created_later(world):
    result = _cli(world, "db", "partitions", "create", "--from", "2024-01", "--through", "2024-03", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"created": ["lineage_history_2024_01", "lineage_history_2024_02",
                                                     "lineage_history_2024_03"], "moved_from_default": {}}
    with psycopg.connect(world.dsn) as conn:
        for when in (datetime(2024, 2, 2, tzinfo=UTC), EPOCH, datetime(1980, 1, 1, tzinfo=UTC)):
            apply_directly(conn, "lineage", TaskRun([f"s3://b/{when.year}.csv"], time=when).events())
        partitions = list_partitions(conn, "public")
        assert all(p.refuses_truncate for p in partitions)
        for partition in partitions:
            target = psycopg.sql.Identifier(partition.name)
            has_rows = conn.execute(psycopg.sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target)).fetchone()[0]
            row_statements = ("UPDATE {} SET asset_key = 's3://b/forged.csv'", "DELETE FROM {}") if has_rows else ()
            for statement in (*row_statements, "TRUNCATE {}"):
                with pytest.raises(psycopg.errors.RestrictViolation, match="lineage_history is append-only"):
                    with conn.transaction():
                        conn.execute(psycopg.sql.SQL(statement).format(target))
        assert conn.execute("SELECT count(*) FROM lineage_history").fetchone()[0] == 3
        with_rows = conn.execute("SELECT count(DISTINCT tableoid) FROM lineage_history").fetchone()[0]
        assert with_rows == 3  # 2024_02 (created by the command), 2025_01 (on demand) and DEFAULT (1980)


def test_creating_a_month_moves_its_rows_out_of_default_and_every_partition_stays_append_only(world):
    odd = [TaskRun([f"s3://b/odd{i}.csv"], upstreams=["s3://b/src.csv"], time=datetime(1990, 5, 3 + i, tzinfo=UTC))
           for i in range(3)]
    runs = [*odd, TaskRun(["s3://b/1991.csv"], time=datetime(1991, 1, 9, tzinfo=UTC))]
    with psycopg.connect(world.dsn) as conn:
        for run in runs:
            apply_directly(conn, "lineage", run.events())
        before = conn.execute("SELECT event_id, event_time, asset_key FROM lineage_history ORDER BY 1").fetchall()
        assert set(_where(conn).values()) == {"lineage_history_default"}

    result = _cli(world, "db", "partitions", "create", "--from", "1990-04", "--through", "1990-05", "--json")
    assert result.returncode == 0, result.stderr
    moved = len([e for run in odd for e in run.events()])
    assert json.loads(result.stdout) == {"created": ["lineage_history_1990_04", "lineage_history_1990_05"],
                                         "moved_from_default": {"lineage_history_1990_05": moved}}
    with psycopg.connect(world.dsn) as conn:
        after = conn.execute("SELECT event_id, event_time, asset_key FROM lineage_history ORDER BY 1").fetchall()
        where = _where(conn)
        partitions = list_partitions(conn, "public")
        for name in ("lineage_history_1990_05", "lineage_history_default"):  # the triggers came back on DEFAULT
            for statement in ("UPDATE {} SET asset_key = 's3://b/forged.csv'", "DELETE FROM {}", "TRUNCATE {}"):
                with pytest.raises(psycopg.errors.RestrictViolation, match="lineage_history is append-only"):
                    with conn.transaction():
                        conn.execute(psycopg.sql.SQL(statement).format(psycopg.sql.Identifier(name)))
    assert after == before  # every row kept, none rewritten
    assert where == {**{f"s3://b/odd{i}.csv": "lineage_history_1990_05" for i in range(3)},
                     "s3://b/1991.csv": "lineage_history_default"}
    assert [p.name for p in partitions][-1] == "lineage_history_default" and all(p.refuses_truncate
                                                                                for p in partitions)


def test_an_index_build_whose_partition_index_name_was_taken_meanwhile_runs_again():
    # A replay builds the history's deferred indexes on two connections, and two of them have the
    # same columns: once in a suite run, both builds chose the same name for a partition's index and
    # the second failed on pg_class's unique name key. PostgreSQL gives that race only by chance (it
    # sees names another build inserted, even uncommitted; both must choose within microseconds), so
    # a stand-in connection gives the error here; the build's own SQL runs in the replay tests.
    from contextlib import nullcontext

    from psycopg import sql

    from assetlog.projections.shadow import build_naming_partitions

    class NameTaken(psycopg.errors.UniqueViolation):
        def __init__(self, key: str) -> None:
            super().__init__(f"duplicate key value violates unique constraint {key}")
            self.key = key

        @property
        def diag(self):  # what psycopg reads from the server's error fields
            return type("Diag", (), {"constraint_name": self.key})()

    class Connection:
        def __init__(self, failures: list[BaseException]) -> None:
            self.failures, self.statements = failures, []

        def transaction(self):
            return nullcontext()

        def execute(self, statement):
            self.statements.append(statement)
            if self.failures:
                raise self.failures.pop(0)

    build = sql.SQL("CREATE INDEX x ON lineage_history (asset_key, event_time)")
    taken = Connection([NameTaken("pg_class_relname_nsp_index")])
    build_naming_partitions(taken, build, [])  # type: ignore[arg-type]
    assert taken.statements == [build, build]
    for other in (NameTaken("lineage_history_pkey"), psycopg.errors.DuplicateTable("relation x exists")):
        with pytest.raises(type(other)):
            build_naming_partitions(Connection([other]), build, [])  # type: ignore[arg-type]
    always = Connection([NameTaken("pg_class_relname_nsp_index") for _ in range(5)])
    with pytest.raises(psycopg.errors.UniqueViolation):
        build_naming_partitions(always, build, [], attempts=5)  # type: ignore[arg-type]
    assert len(always.statements) == 5


def test_an_event_id_met_again_with_another_time_is_dead_lettered_and_the_first_stays(world):
    settings = world.settings
    run = TaskRun(["s3://b/twice.csv"], time=EPOCH)
    (event_type, original), = run.events()
    moved_a = {**original, "event_time": EPOCH + timedelta(days=40)}  # another month, so another partition
    moved_b = {**original, "event_time": EPOCH + timedelta(seconds=1)}  # same month
    publisher = Publisher(settings)
    publisher.event(MATERIALIZATION, original)
    publisher.event(MATERIALIZATION, moved_a)  # same batch as the original
    publisher.event(MATERIALIZATION, original)  # a plain redelivery: ignored, not a dead letter
    publisher.flush()
    assert run_until_caught_up("lineage", settings).dead_letters == 1
    publisher.event(MATERIALIZATION, moved_b)  # against the stored row
    publisher.flush()
    assert run_until_caught_up("lineage", settings).dead_letters == 1
    with psycopg.connect(world.dsn) as conn:
        rows = conn.execute("SELECT event_time FROM lineage_history WHERE event_id = %s",
                            (original["event_id"],)).fetchall()
        letters = conn.execute("SELECT reason, detail FROM dead_letters WHERE projection = 'lineage' "
                               "ORDER BY \"offset\"").fetchall()
    assert rows == [(EPOCH,)]
    assert [r for r, _ in letters] == ["conflicting-event-time"] * 2
    assert original["event_id"] in letters[1][1] and "2025-01-01T00:00:01" in letters[1][1]


def test_the_asset_page_reads_the_last_materialization_from_one_partition(world):
    with psycopg.connect(world.dsn) as conn:
        for month in range(1, 7):
            events = TaskRun(["s3://b/p.csv"], time=datetime(2025, month, 3, tzinfo=UTC)).events()
            apply_directly(conn, "lineage", events)
            apply_directly(conn, "properties", events)
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) " + _DETAILS_NOW, {"key": "s3://b/p.csv"}).fetchall())
    scanned = [line for line in plan.splitlines() if "on lineage_history_" in line and "never executed" not in line]
    assert len(scanned) == 1 and "lineage_history_2025_06" in scanned[0], plan


def test_detach_moves_old_months_to_the_archive_schema_and_refuses_the_current_month(world):
    with psycopg.connect(world.dsn) as conn:
        for month in (1, 2, 3):
            apply_directly(conn, "lineage", TaskRun([f"s3://b/{month}.csv"],
                                                    time=datetime(2025, month, 9, tzinfo=UTC)).events())
    dry = _cli(world, "db", "partitions", "detach", "--before", "2025-03", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["would_detach"] == ["lineage_history_2025_01", "lineage_history_2025_02"]
    done = _cli(world, "db", "partitions", "detach", "--before", "2025-03", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["detached"] == ["lineage_history_2025_01", "lineage_history_2025_02"]
    with psycopg.connect(world.dsn) as conn:
        assert [r[0] for r in conn.execute("SELECT asset_key FROM lineage_history").fetchall()] == ["s3://b/3.csv"]
        archived = conn.execute("SELECT count(*) FROM assetlog_archive.lineage_history_2025_01").fetchone()[0]
        assert archived == 1
    listing = _cli(world, "db", "partitions", "list", "--json")
    assert "lineage_history_2025_01" not in listing.stdout and "lineage_history_2025_03" in listing.stdout
    future = add_months(month_of(datetime.now(UTC)), 1)
    refused = _cli(world, "db", "partitions", "detach", "--before", f"{future:%Y-%m}")
    assert refused.returncode == 1 and "only past months can be detached" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    bad = _cli(world, "db", "partitions", "detach", "--before", "March")
    assert bad.returncode == 2 and "not a month: 'March'" in bad.stderr


def test_the_partitioned_table_keeps_the_index_names_of_0001_and_0002(world):
    with psycopg.connect(world.dsn) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'lineage_history'::regclass")}
        key = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                           "'lineage_history'::regclass AND contype = 'p'").fetchone()[0]
    assert names == {"lineage_history_pkey", "lineage_history_asset_time", "lineage_history_upstream_time",
                     "lineage_history_materialization", "lineage_history_properties",
                     "lineage_history_upstream_properties"}
    assert key == "PRIMARY KEY (event_id, event_time)"


def test_a_replay_swaps_in_a_history_partitioned_alike_and_checks_clean(world):
    from replay_support import replay

    runs = [TaskRun([f"s3://b/{m}.csv"], time=datetime(2025, m, 5, tzinfo=UTC)) for m in (1, 2, 3)]
    runs.append(TaskRun(["s3://b/ancient.csv"], time=datetime(1975, 1, 1, tzinfo=UTC)))  # DEFAULT
    publisher = Publisher(world.settings)
    for run in runs:
        for event_type, record in run.events():
            publisher.event(event_type, record)
    publisher.flush()
    assert run_until_caught_up("lineage", world.settings).events == 4
    with psycopg.connect(world.dsn) as conn:
        before = _where(conn)
        conn.commit()  # no lock held while the command creates a month
        create = _cli(world, "db", "partitions", "create", "--from", "2030-01", "--through", "2030-01")
        assert create.returncode == 0, create.stderr
        live = [p.name for p in list_partitions(conn, "public")]
    assert replay(world, "lineage", "--check")["drift"] is False
    assert replay(world, "lineage")["messages"] == 4
    with psycopg.connect(world.dsn) as conn:
        assert _where(conn) == before
        swapped = list_partitions(conn, "public")
        leftovers = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE c.relname LIKE 'lineage_history%%' AND n.nspname <> 'public'").fetchone()[0]
        with pytest.raises(psycopg.errors.RestrictViolation, match="lineage_history is append-only"):
            conn.execute("TRUNCATE lineage_history_2025_02")
    assert [p.name for p in swapped] == live  # the empty month created by hand survives the swap
    assert all(p.refuses_truncate for p in swapped) and leftovers == 0


def test_a_month_created_live_during_a_replay_is_in_the_swapped_in_history(world):
    from assetlog.projections import SWAPPED_TABLES
    from assetlog.projections.partitions import ahead, create_range, partition_name
    from assetlog.projections.shadow import ShadowTables, drop_retired

    with psycopg.connect(world.dsn, autocommit=True) as conn:
        apply_directly(conn, "lineage", TaskRun(["s3://b/before.csv"], time=EPOCH).events())
        shadow = ShadowTables("public", SWAPPED_TABLES["lineage"])
        shadow.create(conn, defer_indexes=False)
        assert create_range(conn, "public", datetime(2031, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))
        with conn.transaction():
            shadow.resume_autovacuum(conn)
            shadow.swap(conn)
        drop_retired(conn)
        shadow.drop(conn)
        names = [p.name for p in list_partitions(conn, "public")]
        assert all(p.refuses_truncate for p in list_partitions(conn, "public"))
    ahead_now = [partition_name(m) for m in ahead()]  # the next month, in the last week of this one
    assert names == ["lineage_history_2025_01", *ahead_now, "lineage_history_2031_01", "lineage_history_default"]


def test_a_partition_another_writer_created_meanwhile_is_taken_as_there(world, caplog):
    """Two writers (the replay's two workers) meet the same new month: the one that loses the race
    neither warns that the rows go to DEFAULT (they do not) nor tries again next batch."""
    month = add_months(month_of(datetime.now(UTC)), 1)
    with psycopg.connect(world.dsn, autocommit=True) as first, psycopg.connect(world.dsn, autocommit=True) as second:
        assert MonthlyPartitions(None).ensure(first, [month]) == [month]
        late = MonthlyPartitions(None)
        with caplog.at_level(logging.DEBUG, logger="assetlog.projections"):
            assert late._try_create(second, month) is False  # its catalog look-up came before the other's commit
        assert month in late.known
        assert [r.levelname for r in caplog.records] == ["DEBUG"] and "meanwhile" in caplog.records[0].getMessage()
        assert second.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
