"""Online steps that build an index while consumers write (migrations 0006 and 0008).

A plain CREATE INDEX holds a SHARE lock on its table for the whole build (about
a minute per 10M edges), and every batch that writes the table waits behind it.
CREATE INDEX CONCURRENTLY lets writes go on; it cannot run inside a
transaction, so it is an online step (see `migrate.py`), and the migration's
file then only swaps the finished index in or comments on it, catalog changes.
(0006's file calls this module by its first name, `edges_migration.py`; an applied migration's file
is never edited.)
"""

from __future__ import annotations

import psycopg
from psycopg import sql

CODE_POINT_EDGE_INDEX = "asset_edges_upstream_code_points"
KEY_HASH_INDEXES = {"assets_key_hash": "assets", "asset_properties_key_hash": "asset_properties"}


def build_concurrently(conn: psycopg.Connection, name: str, definition: sql.Composable) -> None:
    """CREATE INDEX CONCURRENTLY `name` `definition` unless a valid one exists; safe to run again
    after an interruption, which leaves an invalid index behind (dropped and built anew)."""
    row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)).fetchone()
    if row is not None and not row[0]:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(name)))
        row = None
    if row is None:
        conn.execute(sql.SQL("CREATE INDEX CONCURRENTLY {} ").format(sql.Identifier(name)) + definition)


def build_code_point_edge_index(conn: psycopg.Connection) -> None:
    """0006: the dependants of an asset in code-point order, built beside the old index."""
    build_concurrently(conn, CODE_POINT_EDGE_INDEX,
                       sql.SQL('ON asset_edges (upstream_key, downstream_key COLLATE "C") INCLUDE (declared)'))


def build_key_hash_indexes(conn: psycopg.Connection) -> None:
    """0008: a hash index on the key of `assets` and of `asset_properties` (see the migration's file)."""
    for name, table in KEY_HASH_INDEXES.items():
        build_concurrently(conn, name, sql.SQL("ON {} USING hash (key)").format(sql.Identifier(table)))
