"""Least privilege: `assetlog db migrate` creates a read-only role that can query and cannot write."""

from __future__ import annotations

import psycopg
import pytest
from conftest import Isolated, drop_role, dsn_as_role, dsn_for_database
from events_factory import DASHBOARD, GOLD, PROCESSED, guide_pipelines
from psycopg import sql
from query_world import READER_ROLE, project, reader_dsn

from assetlog.projections import migrate
from assetlog.query.store import LineageStore

QUERIED_TABLES = ("asset_properties", "assets", "asset_edges", "lineage_history")

# Each must be refused for lack of privilege, even with the read-only default switched off.
WRITES = (
    "INSERT INTO assets (key, first_seen, last_seen) VALUES ('s3://intruder/x', now(), now())",
    "UPDATE asset_properties SET name = 'hijacked'",
    "DELETE FROM asset_edges",
    "INSERT INTO lineage_history SELECT * FROM lineage_history LIMIT 0",
    "TRUNCATE lineage_history",
    "UPDATE assets SET last_status = 'FAILED'",
    "DELETE FROM assets",
    "INSERT INTO consumer_offsets (projection, topic, partition, next_offset) VALUES ('lineage', 't', 0, 0)",
    "SELECT count(*) FROM dead_letters",  # not a projection table: not granted at all
    "CREATE TABLE intruder (x int)",
    "CREATE INDEX intruder ON assets (last_seen)",
    "ALTER TABLE assets ADD COLUMN intruder int",
    "DROP TABLE asset_edges",
)


def test_reader_role_reads_the_projections_but_cannot_write(isolated: Isolated) -> None:
    project(isolated.dsn, guide_pipelines())
    with psycopg.connect(reader_dsn(isolated.dsn), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (READER_ROLE,)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        for table in QUERIED_TABLES:
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            assert count[0] > 0, table
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM assets")
        conn.execute("SET default_transaction_read_only = off")  # from here on only privileges stand guard
        for statement in WRITES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)  # type: ignore[arg-type]
    with psycopg.connect(isolated.dsn) as owner:  # and nothing changed
        assert owner.execute("SELECT count(*) FROM assets WHERE key LIKE 's3://intruder%'").fetchone() == (0,)
        assert owner.execute("SELECT to_regclass('intruder')").fetchone() == (None,)


def test_every_migrated_database_grants_the_existing_role(isolated: Isolated) -> None:
    """The role is cluster-wide and created once; each database's migration grants it again."""
    other = f"{isolated.database}_b"
    with psycopg.connect(isolated.settings.postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(other)))
    try:
        other_dsn = dsn_for_database(isolated.dsn, other)
        for dsn in (isolated.dsn, other_dsn):
            assert migrate(dsn).version >= 2
            assert migrate(dsn).applied == []  # idempotent
            with psycopg.connect(reader_dsn(dsn)) as conn:
                assert conn.execute("SELECT count(*) FROM asset_edges").fetchone() == (0,)
    finally:
        with psycopg.connect(isolated.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(other)))


def test_the_store_answers_everything_as_the_reader(isolated: Isolated) -> None:
    project(isolated.dsn, guide_pipelines())
    with LineageStore(reader_dsn(isolated.dsn)) as store:
        assert store.asset(PROCESSED).properties.name == "Processed Customer Data"
        assert [n.key for n in store.upstream(DASHBOARD, depth=1).nodes] == [DASHBOARD, GOLD]
        assert store.history(GOLD).entries[0].run.status == "FAILED"
        assert store.search("customer").assets
        assert store.asset(DASHBOARD, as_of=store.asset(DASHBOARD).first_seen).properties.url is not None


def test_store_sessions_are_read_only_even_on_the_owner_dsn(isolated: Isolated) -> None:
    project(isolated.dsn, guide_pipelines())
    with LineageStore(isolated.dsn) as store, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        with store._reading() as conn:
            conn.execute("DELETE FROM assets")
    with psycopg.connect(isolated.dsn) as owner:
        assert owner.execute("SELECT count(*) FROM assets").fetchone()[0] > 0


def test_without_rights_to_create_extensions_migration_succeeds_and_search_still_works(
        isolated: Isolated) -> None:
    """pg_trgm is optional: a migrating user who may not create it (no CREATE on the database) gets
    no trigram indexes, and search answers the same by scanning."""
    migrator = f"assetlog_test_migrator_{isolated.database[-10:]}"
    with psycopg.connect(isolated.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(migrator)))
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(migrator)))
    try:
        project(dsn_as_role(isolated.dsn, migrator), guide_pipelines())
        with psycopg.connect(isolated.dsn) as admin:
            assert admin.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() == (0,)
            assert admin.execute("SELECT to_regclass('assets_key_trgm')").fetchone() == (None,)
        with LineageStore(reader_dsn(isolated.dsn)) as store:
            assert [a.key for a in store.search("CUSTOMER").assets] == [
                "s3://my-bucket/processed-data.csv", "snowflake://my-warehouse/customer_db/customers"]
    finally:
        drop_role(isolated.dsn, migrator)


def test_with_pg_trgm_search_uses_the_trigram_indexes(isolated: Isolated) -> None:
    project(isolated.dsn, guide_pipelines())
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("SET enable_seqscan = off")  # tiny tables: make the planner show what it can use
        plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN SELECT key FROM asset_properties "
            "WHERE assetlog_search_text(key, name, description, owners) ILIKE '%customer%'"))
        assert "asset_properties_search_trgm" in plan
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN SELECT key FROM assets WHERE key ILIKE '%lake%'"))
        assert "assets_key_trgm" in plan
