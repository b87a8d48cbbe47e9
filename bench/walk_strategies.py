"""Lineage walk strategies the query benchmark measures against the one `assetlog.query.graph` ships.

- `unbounded_walk`: the previous walk, verbatim in its queries: breadth first, one query per hop
  that fetched every edge of the frontier (a hub's 100k dependants crossed the wire to keep 150).
  `tests/test_query_walk_bounded.py` also uses it as the reference the shipped walk must equal.
- `NAIVE_CTE`: the textbook recursive CTE (UNION over (key, depth), no node limit), keys and
  depths only.
- A maintained closure table is estimated, not built: `closure_rows` sums, over sampled roots, the
  assets a 10-hop walk without a node limit reaches (a lower bound of the rows it would need).
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from assetlog.query import graph
from assetlog.query.models import Direction, LineageGraph

_UNBOUNDED_NOW = {
    "upstream": "SELECT downstream_key, upstream_key, declared FROM asset_edges "
                "WHERE downstream_key = ANY(string_to_array(%(frontier)s, E'\\n'))",
    "downstream": "SELECT upstream_key, downstream_key, declared FROM asset_edges "
                  "WHERE upstream_key = ANY(string_to_array(%(frontier)s, E'\\n'))",
}
_UNBOUNDED_AS_OF = {
    "upstream": "SELECT asset_key, upstream_key, "
                "CASE WHEN bool_or(payload ->> 'declared' = 'EXPLICIT') THEN 'explicit' ELSE 'inferred' END "
                "FROM lineage_history "
                "WHERE asset_key = ANY(string_to_array(%(frontier)s, E'\\n')) AND event_type = 'dependency' "
                "AND event_time <= %(as_of)s GROUP BY asset_key, upstream_key",
    "downstream": "SELECT upstream_key, asset_key, "
                  "CASE WHEN bool_or(payload ->> 'declared' = 'EXPLICIT') THEN 'explicit' ELSE 'inferred' END "
                  "FROM lineage_history "
                  "WHERE upstream_key = ANY(string_to_array(%(frontier)s, E'\\n')) "
                  "AND event_type = 'dependency' AND event_time <= %(as_of)s GROUP BY upstream_key, asset_key",
}

NAIVE_CTE = {
    "upstream": "WITH RECURSIVE walk(key, depth) AS (SELECT %(root)s::text, 0 UNION "
                "SELECT e.upstream_key, w.depth + 1 FROM walk w JOIN asset_edges e ON e.downstream_key = w.key "
                "WHERE w.depth < %(depth)s) SELECT key, min(depth) FROM walk GROUP BY key",
    "downstream": "WITH RECURSIVE walk(key, depth) AS (SELECT %(root)s::text, 0 UNION "
                  "SELECT e.downstream_key, w.depth + 1 FROM walk w JOIN asset_edges e ON e.upstream_key = w.key "
                  "WHERE w.depth < %(depth)s) SELECT key, min(depth) FROM walk GROUP BY key",
}


def unbounded_walk(conn: psycopg.Connection, root: str, direction: Direction, depth: int | None, limit: int,
                   as_of: datetime | None) -> LineageGraph:
    """The walk before the bounded hops: every edge of the frontier fetched at each hop."""
    sides = ("upstream", "downstream") if direction == "both" else (direction,)
    state = graph._Walk(root=root, limit=limit, admitted={root: None}, depths={side: {root: 0} for side in sides})
    queries = _UNBOUNDED_AS_OF if as_of else _UNBOUNDED_NOW
    frontiers = {side: [root] for side in sides}
    hop = 0
    while not state.truncated and any(frontiers.values()) and (depth is None or hop < depth):
        hop += 1
        for side in sides:
            if not frontiers[side] or state.truncated:
                frontiers[side] = []
                continue
            rows = conn.execute(queries[side], {"frontier": "\n".join(frontiers[side]), "as_of": as_of}).fetchall()  # type: ignore[call-overload]
            frontiers[side] = state.admit_hop(side, hop, rows)
    return graph._graph(conn, state, direction, depth, as_of)
