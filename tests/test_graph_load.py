"""The query benchmark's bulk loader writes exactly the rows the projections' batch-by-batch apply writes.

`bench/graph_load.py` loads 10M edges in minutes by COPYing the projections' own rows and deriving
the edges with the lineage projection's rebuild rule; the figures it supports are only worth
something if the tables are the same as the consumers' path would leave them.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import psycopg
from conftest import StackEndpoints, create_isolated, drop_isolated

from assetlog.projections import migrate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from graph_load import LOADED_TABLES, build_dag, copy_load, load_through_projections


def table_rows(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as conn:
        return {name: sorted(row[0] for row in conn.execute(f"SELECT row_to_json(t)::text FROM {name} t"))
                for name in LOADED_TABLES}


def test_copy_loader_writes_the_rows_the_projections_write(stack: StackEndpoints, tmp_path: Path) -> None:
    keys, upstreams = build_dag(600, 6, random.Random(7), edges=2400)
    worlds = [create_isolated(stack, tmp_path / name) for name in ("copy", "apply")]
    try:
        for world in worlds:
            migrate(world.dsn)
        copy_load(worlds[0].dsn, keys, upstreams, 6, random.Random(8), chunk=150)
        load_through_projections(worlds[1].dsn, keys, upstreams, 6, random.Random(8), chunk=100)
        bulk, applied = table_rows(worlds[0].dsn), table_rows(worlds[1].dsn)
        assert {name: len(rows) for name, rows in bulk.items()} == {name: len(rows) for name, rows in applied.items()}
        assert len(applied["asset_edges"]) > 2000 and len(applied["lineage_history"]) > 3000
        for name in LOADED_TABLES:
            assert bulk[name] == applied[name], name
        with psycopg.connect(worlds[0].dsn) as conn:  # the indexes and keys are back
            indexes = {row[0] for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename IN ('lineage_history', 'asset_edges')")}
            # ... and usable: valid, and on every partition of the partitioned history (rebuilt "ON ONLY"
            # the parent, they were neither, and "as of" walks scanned the history sequentially).
            invalid = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid").fetchall()
            unindexed = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'lineage_history'::regclass AND (SELECT count(*) FROM pg_index x "
                "WHERE x.indrelid = c.oid) < (SELECT count(*) FROM pg_index x WHERE x.indrelid = i.inhparent)"
            ).fetchall()
        assert {"lineage_history_pkey", "asset_edges_pkey", "asset_edges_upstream",
                "lineage_history_properties"} <= indexes
        assert invalid == [] and unindexed == []
    finally:
        for world in worlds:
            drop_isolated(stack, world)
