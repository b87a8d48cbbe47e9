"""Migration 0010's online step: `asset_edges.explicit_since`, filled in, and the walks' indexes with it.

On a connection in autocommit mode (the migrator holds its session advisory lock), while consumers write:

1. the column: adding it without a default writes no row, but needs the table to itself for an instant,
   asked for with a short lock_timeout, again and again (`short_locks`);
2. the explicit edges already stored get it from their history, a few thousand at a time, each batch its
   own short transaction. A batch first locks its edges (FOR UPDATE), then reads the history in a new
   statement: a consumer that wrote one of these edges has committed by then, so its events are seen;
   one that writes it later waits for the batch and merges into the filled row (`edge_merge`). An edge
   whose explicit events are all in detached partitions keeps none ("not known", as before);
3. a VACUUM of the table, if edges were filled (the walks' index-only scans need its visibility map);
4. the covering indexes with first_seen and explicit_since, built concurrently beside the old ones;
   0010's file swaps them in.

Each part is safe to run again after an interruption: the column is added if missing, the batches take
the edges still without the time, and an index left invalid is built anew (`build_concurrently`).
"""

from __future__ import annotations

import logging
import time

import psycopg
from psycopg import sql

from assetlog.projections.edge_merge import explicit_events
from assetlog.projections.online_indexes import build_concurrently
from assetlog.projections.short_locks import with_short_locks

log = logging.getLogger("assetlog.migrate")

BATCH = 5_000

# The walks' covering indexes, with the times an "as of" hop reads, by their final name (built as NAME_with_times).
EDGE_INDEXES_WITH_TIMES = {
    "asset_edges_upstream": sql.SQL('ON asset_edges (upstream_key, downstream_key COLLATE "C") '
                                    "INCLUDE (declared, first_seen, explicit_since)"),
    "asset_edges_downstream": sql.SQL("ON asset_edges (downstream_key, upstream_key) "
                                      "INCLUDE (declared, first_seen, explicit_since)"),
}
TIMES_SUFFIX = "_with_times"

_LOCK_BATCH = sql.SQL(
    "SELECT upstream_key, downstream_key FROM asset_edges WHERE declared = 'explicit' AND explicit_since IS NULL "
    "AND (upstream_key, downstream_key) > (%s, %s) ORDER BY upstream_key, downstream_key LIMIT %s FOR UPDATE")
# The same rule as `edge_merge`'s explicit_since over the history, for the locked edges.
_FILL_BATCH = sql.SQL(
    "UPDATE asset_edges e SET explicit_since = (SELECT min(h.event_time) FROM lineage_history h WHERE {explicit}) "
    "FROM unnest(%s::text[], %s::text[]) AS k(upstream_key, downstream_key) "
    "WHERE e.upstream_key = k.upstream_key AND e.downstream_key = k.downstream_key").format(
    explicit=explicit_events(sql.Identifier("e")))


def add_explicit_since(conn: psycopg.Connection) -> dict[str, object]:
    """Run the parts (see the module docstring); returns the explicit edges looked up and the seconds taken."""
    started = time.monotonic()
    with_short_locks(conn, "adding asset_edges.explicit_since", "lock asset_edges", lambda: conn.execute(
        "ALTER TABLE asset_edges ADD COLUMN IF NOT EXISTS explicit_since timestamptz"))
    looked_up = fill_explicit_since(conn)
    if looked_up:
        # The filled rows' pages are no longer all-visible: until a VACUUM marks them again, every "index-only"
        # hop reads them from the heap (10-hop walks at 10M edges: 25 against 19-20 ms p50, until autovacuum
        # came). This one does not block writers.
        conn.execute("VACUUM (ANALYZE) asset_edges")
    for name, definition in EDGE_INDEXES_WITH_TIMES.items():
        build_concurrently(conn, name + TIMES_SUFFIX, definition)
    return {"explicit_edges_looked_up": looked_up, "seconds": round(time.monotonic() - started, 3)}


def fill_explicit_since(conn: psycopg.Connection) -> int:
    """Give the explicit edges without explicit_since their first explicit event's time, BATCH at a time.
    Returns the edges looked up (one whose history has no explicit event stays without it)."""
    after = ("", "")
    looked_up = 0
    while True:
        with conn.transaction():
            keys = conn.execute(_LOCK_BATCH, (*after, BATCH)).fetchall()
            if not keys:
                return looked_up
            conn.execute(_FILL_BATCH, ([k[0] for k in keys], [k[1] for k in keys]))
        looked_up += len(keys)
        after = keys[-1]
        log.info("adding asset_edges.explicit_since: %d explicit edges looked up", looked_up)
