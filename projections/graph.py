"""Lineage walks: upstream, downstream or both from one asset, bounded in hops, nodes and time.

The walk is breadth first, one indexed query per hop (`= ANY(frontier)`),
with the visited set kept here rather than in SQL. That is what makes it
exact and bounded at once:

- each asset is expanded once, so cycles end and a diamond-shaped DAG costs
  its size, not its number of paths (a recursive CTE with path tracking
  enumerates paths; one that dedupes on (key, depth) re-expands an asset at
  every depth it is reachable at, and cannot stop at a node count);
- depth is the fewest hops from the root;
- the walk stops as soon as the next hop would pass the node limit, keeping
  the first assets of that hop by key, and says `truncated`;
- every hop runs under the session's statement_timeout and the whole walk
  under the same budget, so no answer runs for minutes.

"Now" walks `asset_edges`; "as of T" walks the dependency events in
`lineage_history` with event_time <= T (an edge exists from its first event).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from assetlog.errors import AssetlogError
from assetlog.projections.catalog import PROPERTIES_AS_OF
from assetlog.projections.models import Direction, LineageEdge, LineageGraph, LineageNode


class QueryTimeout(AssetlogError):
    """A query ran past its time budget and was cancelled."""


# Each query returns (frontier key, neighbour key, declared, first_seen, last_seen) for the
# frontier's neighbours on one side.
_NEIGHBOURS_NOW = {
    "upstream": "SELECT downstream_key, upstream_key, declared, first_seen, last_seen FROM asset_edges "
                "WHERE downstream_key = ANY(%(frontier)s::text[])",
    "downstream": "SELECT upstream_key, downstream_key, declared, first_seen, last_seen FROM asset_edges "
                  "WHERE upstream_key = ANY(%(frontier)s::text[])",
}
_DECLARED_AS_OF = "CASE WHEN bool_or(payload ->> 'declared' = 'EXPLICIT') THEN 'explicit' ELSE 'inferred' END"
_NEIGHBOURS_AS_OF = {
    "upstream": "SELECT asset_key, upstream_key, " + _DECLARED_AS_OF + ", min(event_time), max(event_time) "
                "FROM lineage_history WHERE asset_key = ANY(%(frontier)s::text[]) AND event_type = 'dependency' "
                "AND event_time <= %(as_of)s GROUP BY asset_key, upstream_key",
    "downstream": "SELECT upstream_key, asset_key, " + _DECLARED_AS_OF + ", min(event_time), max(event_time) "
                  "FROM lineage_history WHERE upstream_key = ANY(%(frontier)s::text[]) "
                  "AND event_type = 'dependency' AND event_time <= %(as_of)s GROUP BY upstream_key, asset_key",
}

# Headline state of the answer's nodes: name, last status and time.
_NODES_NOW = """
SELECT k.key, p.name, a.last_status, a.last_materialized_at
FROM unnest(%(keys)s::text[]) AS k(key)
LEFT JOIN assets a ON a.key = k.key
LEFT JOIN asset_properties p ON p.key = k.key
"""
_NODES_AS_OF = sql.SQL("""
SELECT k.key, pr.properties ->> 'name', m.status, m.event_time
FROM unnest(%(keys)s::text[]) AS k(key)
LEFT JOIN LATERAL ({properties}) pr ON true
LEFT JOIN LATERAL (
    SELECT h.status, h.event_time FROM lineage_history h
     WHERE h.asset_key = k.key AND h.event_type = 'materialization' AND h.event_time <= %(as_of)s
     ORDER BY h.event_time DESC, h.event_id DESC LIMIT 1
) m ON true
""").format(properties=PROPERTIES_AS_OF)


@dataclass
class _Walk:
    """The state of one walk: admitted nodes (in admission order), depths per side, edges."""

    root: str
    limit: int
    admitted: dict[str, None] = field(default_factory=dict)
    depths: dict[str, dict[str, int]] = field(default_factory=dict)
    edges: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    truncated: bool = False

    def admit_hop(self, side: str, hop: int, rows: list[tuple[Any, ...]]) -> list[str]:
        """Record one hop's rows; returns the next frontier (this side's new nodes, by key)."""
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
        for near, far, declared, first_seen, last_seen in rows:
            if far in self.admitted:
                pair = (far, near) if side == "upstream" else (near, far)
                self.edges[pair] = (declared, first_seen, last_seen)
        return new


def walk(conn: psycopg.Connection, root: str, direction: Direction, depth: int | None, limit: int,
         as_of: datetime | None, budget_seconds: float) -> LineageGraph:
    """The lineage of `root` (which the caller checked exists); see the module docstring."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if depth is not None and depth < 1:
        raise ValueError("depth must be at least 1 (or None for unlimited)")
    deadline = time.monotonic() + budget_seconds
    sides = ("upstream", "downstream") if direction == "both" else (direction,)
    state = _Walk(root=root, limit=limit, admitted={root: None}, depths={side: {root: 0} for side in sides})
    queries = _NEIGHBOURS_AS_OF if as_of else _NEIGHBOURS_NOW
    frontiers = {side: [root] for side in sides}
    hop = 0
    while not state.truncated and any(frontiers.values()) and (depth is None or hop < depth):
        hop += 1
        for side in sides:
            if not frontiers[side] or state.truncated:
                frontiers[side] = []
                continue
            if time.monotonic() > deadline:
                raise QueryTimeout(
                    f"the lineage walk took longer than {budget_seconds:g}s (stopped after {hop - 1} hops, "
                    f"{len(state.admitted)} assets); narrow it with a smaller depth or limit")
            rows = conn.execute(queries[side], {"frontier": frontiers[side], "as_of": as_of}).fetchall()  # type: ignore[call-overload]
            frontiers[side] = state.admit_hop(side, hop, rows)
    return _graph(conn, state, direction, depth, as_of)


def _graph(conn: psycopg.Connection, state: _Walk, direction: Direction, depth: int | None,
           as_of: datetime | None) -> LineageGraph:
    keys = list(state.admitted)
    headline = {
        row[0]: row[1:]
        for row in conn.execute(_NODES_AS_OF if as_of else _NODES_NOW, {"keys": keys, "as_of": as_of})  # type: ignore[call-overload]
    }
    nodes = []
    for key in keys:
        name, status, materialized_at = headline.get(key, (None, None, None))
        nodes.append(LineageNode(
            key=key, upstream_depth=state.depths.get("upstream", {}).get(key),
            downstream_depth=state.depths.get("downstream", {}).get(key),
            name=name, last_status=status, last_materialized_at=materialized_at))
    nodes.sort(key=lambda n: (min(d for d in (n.upstream_depth, n.downstream_depth) if d is not None), n.key))
    edges = [
        LineageEdge(upstream=up, downstream=down, declared=declared, first_seen=first_seen, last_seen=last_seen)
        for (up, down), (declared, first_seen, last_seen) in sorted(state.edges.items())
    ]
    return LineageGraph(root=state.root, direction=direction, depth=depth, as_of=as_of, limit=state.limit,
                        truncated=state.truncated, nodes=nodes, edges=edges)
