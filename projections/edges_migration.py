"""Migration 0006's online step: the code-point edge index, built while consumers write.

A plain CREATE INDEX holds a SHARE lock on `asset_edges` for the whole build
(about a minute per 10M edges), and every lineage batch's edge upsert waits
behind it. CREATE INDEX CONCURRENTLY lets writes go on; it cannot run inside a
transaction, so it is an online step (see `migrate.py`), and the file then only
swaps the finished index in under its usual name, a catalog change.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

NEW_INDEX = "asset_edges_upstream_code_points"


def build_code_point_edge_index(conn: psycopg.Connection) -> None:
    """Build 0006's index beside the old one; safe to run again after an interruption."""
    row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (NEW_INDEX,)).fetchone()
    if row is not None and not row[0]:  # an interrupted concurrent build leaves an invalid index behind
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(NEW_INDEX)))
        row = None
    if row is None:
        conn.execute(sql.SQL('CREATE INDEX CONCURRENTLY {} ON asset_edges '
                             '(upstream_key, downstream_key COLLATE "C") INCLUDE (declared)').format(
            sql.Identifier(NEW_INDEX)))
