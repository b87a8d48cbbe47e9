"""A replay keeps autovacuum off its shadow tables while they load, and the swapped-in tables come with
the settings the live ones had (projections/autovacuum.py), an operator's own included.

Against the real PostgreSQL: reloptions as the catalog holds them, before, during and after.
"""

from __future__ import annotations

import psycopg
from events_factory import publish
from replay_support import realistic_runs, replay

from assetlog.consumers import run_until_caught_up
from assetlog.projections import SWAPPED_TABLES, autovacuum, migrate
from assetlog.projections.shadow import RETIRED_SCHEMA, ShadowTables, definition, drop_retired

TABLES = [table for name in ("properties", "lineage") for table in SWAPPED_TABLES[name]]
LEAF_OPTIONS = (
    "SELECT c.relname, c.reloptions, (SELECT reloptions FROM pg_class x WHERE x.oid = c.reltoastrelid) "
    "FROM pg_class c WHERE c.relkind = 'r' AND (c.oid = %(t)s::regclass OR c.oid IN "
    "(SELECT relid FROM pg_partition_tree(%(t)s::regclass))) ORDER BY 1")


def leaf_options(conn: psycopg.Connection, schema: str) -> dict[str, tuple]:
    """Each table's (or partition's) own reloptions and its TOAST table's."""
    return {name: (options, toast) for table in TABLES
            for name, options, toast in conn.execute(LEAF_OPTIONS, {"t": f"{schema}.{table}"}).fetchall()}


def deployed(world, events: int) -> None:
    """A migrated database whose live consumers have projected `events` realistic events."""
    migrate(world.dsn)
    publish(world.settings, realistic_runs(events))
    for name in ("properties", "lineage"):
        run_until_caught_up(name, world.settings)


def test_shadow_tables_load_without_autovacuum_and_go_live_with_the_live_settings(isolated):
    deployed(isolated, 1500)
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        # An operator's tuning (docs/scale.md suggests it for asset_edges) must survive a replay.
        conn.execute("ALTER TABLE asset_edges SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_enabled = true)")
        before = leaf_options(conn, "public")
        assert {"autovacuum_vacuum_scale_factor=0.02", "autovacuum_enabled=true"} <= set(before["asset_edges"][0])
        assert any(name.startswith("lineage_history_") for name in before)  # partitions are leaves too

        shadow = ShadowTables("public", TABLES)
        shadow.create(conn, defer_indexes=False)  # so that only the autovacuum settings tell them apart
        during = leaf_options(conn, shadow.schema)
        assert during.keys() == before.keys()
        for name, (options, toast) in during.items():
            assert "autovacuum_enabled=false" in options, name
            assert toast is None or "autovacuum_enabled=false" in toast, name
        assert set(shadow.mismatches(conn)) == {"asset_edges", "asset_properties", "assets", "lineage_event_ids"}
        with conn.transaction():
            shadow.resume_autovacuum(conn)
            assert leaf_options(conn, shadow.schema) == before
            assert shadow.mismatches(conn) == []
        shadow.drop(conn)

    result = replay(isolated, "all")
    assert result["mode"] == "swap"
    with psycopg.connect(isolated.dsn) as conn:
        assert leaf_options(conn, "public") == before
        assert definition(conn, "public", "asset_edges")["table"][2] == before["asset_edges"][0]


def test_the_swap_pauses_autovacuum_on_the_tables_it_retires(isolated):
    """They are dropped right after the swap; an autovacuum started on them meanwhile would hold the DROP."""
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        live = leaf_options(conn, "public")
        shadow = ShadowTables("public", TABLES)
        shadow.create(conn, defer_indexes=False)
        with conn.transaction():
            shadow.resume_autovacuum(conn)
            shadow.swap(conn)
            retired = leaf_options(conn, RETIRED_SCHEMA)
            assert retired.keys() == live.keys()
            assert all("autovacuum_enabled=false" in options for options, _toast in retired.values())
        drop_retired(conn)
        assert leaf_options(conn, "public") == live  # the swapped-in tables: the live settings
        shadow.drop(conn)


def test_a_reader_holding_a_table_is_not_autovacuum(isolated):
    """The swap skips its short tries only when autovacuum alone holds its tables: a reader's transaction
    must keep them (it may end within a short try). Autovacuum holding them alone, with a real crawling
    autovacuum: tests/test_fault_regressions.py."""
    migrate(isolated.dsn)
    tables = [("public", table) for table in TABLES]
    with psycopg.connect(isolated.dsn, autocommit=True) as control, psycopg.connect(isolated.dsn) as reader:
        assert not autovacuum.holds_alone(control, tables)  # nobody holds them
        reader.execute("SELECT count(*) FROM lineage_history")  # its transaction stays open, holding the lock
        assert not autovacuum.holds_alone(control, tables)
