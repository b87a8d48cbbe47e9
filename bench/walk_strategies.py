"""Lineage walk strategies the query benchmark measures against the one `assetlog.query.graph` ships.

- `unbounded_walk`: the walk before the bounded hops, verbatim (its queries, its bookkeeping and
  its answer building, copied here so that changes to `assetlog.query.graph` cannot change the
  reference too): breadth first, one query per hop that fetched every edge of the frontier (a hub's
  100k dependants crossed the wire to keep 150). `tests/test_query_walk_bounded.py` uses it as the
  reference the shipped walk must equal.
- `NAIVE_CTE`: the textbook recursive CTE (UNION over (key, depth), no node limit), keys and
  depths only.
- `one_statement_walk`: the shipped walk's answer computed on the server in one statement (one
  direction, now): a recursive CTE carrying one row per hop (its frontier, the keys seen so far, and
  whether the limit cut it; the candidates by EXCEPT, the first `room` in code point order), then
  the edges from the expanded keys into the answer; the answer is built as the shipped walk does
  (headline query, model). What a server-side walk (or a PL/pgSQL function doing the same) saves is
  the hops' round trips and rows on the wire; what it costs is the set arithmetic in SQL and a second
  read of the expanded keys' edges.
- A maintained closure table is estimated, not built: `closure_rows` sums, over sampled roots, the
  assets a 10-hop walk without a node limit reaches (a lower bound of the rows it would need).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from assetlog.query.catalog import PROPERTIES_AS_OF
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


_ONE_STATEMENT = {side: sql.SQL("""
WITH RECURSIVE w(hop, frontier, seen, cut) AS (
    SELECT 0, ARRAY[%(root)s]::text[], ARRAY[%(root)s]::text[], false
    UNION ALL
    SELECT w.hop + 1, n.new, w.seen || n.new, n.cut FROM w CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(far ORDER BY far COLLATE "C")
                        FILTER (WHERE rank <= %(limit)s - cardinality(w.seen)), '{{}}') AS new,
               count(*) > %(limit)s - cardinality(w.seen) AS cut
        FROM (SELECT far, row_number() OVER (ORDER BY far COLLATE "C") AS rank FROM (
            SELECT e.{far} AS far FROM asset_edges e WHERE e.{near} = ANY(w.frontier)
            EXCEPT SELECT unnest(w.seen)) candidates) ranked) n
    WHERE NOT w.cut AND cardinality(w.frontier) > 0 AND w.hop < %(depth)s
), nodes AS (SELECT unnest(frontier) AS key, hop FROM w),
expanded AS (SELECT unnest(frontier) AS key FROM w WHERE hop < (SELECT max(hop) FROM w))
SELECT key, hop, NULL, (SELECT bool_or(cut) FROM w) FROM nodes
UNION ALL
SELECT e.{near}, NULL, e.{far} || E'\\n' || e.declared, NULL
FROM expanded x JOIN asset_edges e ON e.{near} = x.key JOIN nodes n ON n.key = e.{far}
""").format(near=sql.Identifier(near), far=sql.Identifier(far))
    for side, near, far in (("upstream", "downstream_key", "upstream_key"),
                            ("downstream", "upstream_key", "downstream_key"))}


def one_statement_walk(conn: psycopg.Connection, root: str, direction: Direction, depth: int, limit: int,
                       as_of: datetime | None = None) -> LineageGraph:
    """The walk in one statement (see the module docstring); one direction, now."""
    from assetlog.query import graph  # the shipped answer building, so that only the walk differs

    if direction == "both" or as_of is not None:
        raise ValueError("the one-statement walk is measured for one direction, now")
    rows = conn.execute(_ONE_STATEMENT[direction], {"root": root, "depth": depth, "limit": limit}).fetchall()
    depths = {key: hop for key, hop, _, _ in rows if hop is not None}
    edges = {}
    for near, hop, far_declared, _ in rows:
        if hop is None:
            far, declared = far_declared.split("\n")
            edges[(far, near) if direction == "upstream" else (near, far)] = declared
    state = graph._Walk(root=root, limit=limit, admitted=dict.fromkeys(sorted(depths, key=lambda k: (depths[k], k))),
                        depths={direction: depths}, edges=edges, truncated=any(row[3] for row in rows if row[1] is not None))
    return graph._graph(conn, state, direction, depth, None)


def unbounded_walk(conn: psycopg.Connection, root: str, direction: Direction, depth: int | None, limit: int,
                   as_of: datetime | None) -> LineageGraph:
    """The walk before the bounded hops: every edge of the frontier fetched at each hop."""
    sides = ("upstream", "downstream") if direction == "both" else (direction,)
    state = _Walk(root=root, limit=limit, admitted={root: None}, depths={side: {root: 0} for side in sides})
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
    return _graph(conn, state, direction, depth, as_of)


# The rest is the previous walk's bookkeeping and answer, verbatim (query/graph.py before the
# 10M-edge work), so that the reference does not move when the shipped walk does.
_NODES_NOW = """
SELECT k.key, p.name, a.last_status, a.last_materialized_at
FROM unnest(string_to_array(%(keys)s, E'\\n')) AS k(key)
LEFT JOIN LATERAL (SELECT last_status, last_materialized_at FROM assets WHERE key = k.key LIMIT 1) a ON true
LEFT JOIN LATERAL (SELECT name FROM asset_properties WHERE key = k.key LIMIT 1) p ON true
"""
_NODES_AS_OF = sql.SQL("""
SELECT k.key, pr.properties ->> 'name', m.status, m.event_time
FROM unnest(string_to_array(%(keys)s, E'\\n')) AS k(key)
LEFT JOIN LATERAL ({properties}) pr ON true
LEFT JOIN LATERAL (
    SELECT h.status, h.event_time FROM lineage_history h
     WHERE h.asset_key = k.key AND h.event_type = 'materialization' AND h.event_time <= %(as_of)s
     ORDER BY h.event_time DESC, h.event_id DESC LIMIT 1
) m ON true
""").format(properties=PROPERTIES_AS_OF)


@dataclass
class _Walk:
    root: str
    limit: int
    admitted: dict[str, None] = field(default_factory=dict)
    depths: dict[str, dict[str, int]] = field(default_factory=dict)
    edges: dict[tuple[str, str], str] = field(default_factory=dict)
    truncated: bool = False

    def admit_hop(self, side: str, hop: int, rows: list[tuple[Any, ...]]) -> list[str]:
        seen = self.depths[side]
        new = sorted({row[1] for row in rows if row[1] not in seen})
        costly = [key for key in new if key not in self.admitted]
        room = self.limit - len(self.admitted)
        if len(costly) > room:
            self.truncated = True
            dropped = set(costly[room:])
            new = [key for key in new if key not in dropped]
        for key in new:
            seen[key] = hop
            self.admitted.setdefault(key)
        for near, far, declared in rows:
            if far in self.admitted:
                self.edges[(far, near) if side == "upstream" else (near, far)] = declared
        return new


def _graph(conn: psycopg.Connection, state: _Walk, direction: Direction, depth: int | None,
           as_of: datetime | None) -> LineageGraph:
    params = {"keys": "\n".join(state.admitted), "as_of": as_of}
    headline = {row[0]: row[1:] for row in conn.execute(_NODES_AS_OF if as_of else _NODES_NOW, params)}  # type: ignore[call-overload]
    up_depths = state.depths.get("upstream", {})
    down_depths = state.depths.get("downstream", {})

    def order(key: str) -> tuple[int, str]:
        return (min(up_depths.get(key, len(state.admitted)), down_depths.get(key, len(state.admitted))), key)

    nodes = []
    for key in sorted(state.admitted, key=order):
        name, status, materialized_at = headline.get(key, (None, None, None))
        nodes.append({"key": key, "upstream_depth": up_depths.get(key), "downstream_depth": down_depths.get(key),
                      "name": name, "last_status": status, "last_materialized_at": materialized_at})
    edges = [{"upstream": up, "downstream": down, "declared": declared}
             for (up, down), declared in sorted(state.edges.items())]
    return LineageGraph.model_validate({
        "root": state.root, "direction": direction, "depth": depth, "as_of": as_of, "limit": state.limit,
        "truncated": state.truncated, "nodes": nodes, "edges": edges})
