"""Lineage walks: upstream, downstream or both from one asset, bounded in hops, nodes and time.

The walk is breadth first, one indexed query per hop (`= ANY(frontier)`),
with the visited set kept here rather than in SQL; a hop out of a hub returns
only the rows the walk can keep (see `_NEIGHBOURS`), so a hub's 100k
dependants stay on the server. That is what makes it exact and bounded at once:

- each asset is expanded once, so cycles end and a diamond-shaped DAG costs
  its size, not its number of paths (a recursive CTE with path tracking
  enumerates paths; one that dedupes on (key, depth) re-expands an asset at
  every depth it is reachable at, and cannot stop at a node count);
- depth is the fewest hops from the root;
- the walk stops as soon as the next hop would pass the node limit, keeping
  the first assets of that hop by key, and says `truncated`;
- every hop runs under the session's statement_timeout and the whole walk
  under the same budget, so no answer runs for minutes.

Both walk `asset_edges`: "now" every edge, "as of T" the edges first seen by
T, declared as they were at T (`query.edges.links_near` states both). The
choice against a recursive CTE and a closure table, measured at 10M edges, is
in bench/README.md ("Graph at 10M edges").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from pydantic import TypeAdapter

from assetlog.errors import AssetlogError
from assetlog.query.catalog import PROPERTIES_AS_OF
from assetlog.query.edges import links_near
from assetlog.query.models import Direction, LineageEdge, LineageGraph


class QueryTimeout(AssetlogError):
    """A query ran past its time budget and was cancelled."""


# A frontier travels as one text parameter, keys joined by newlines (a key never contains one),
# split by string_to_array: much cheaper to send than a text[] of a thousand keys. So do the keys
# admitted so far.
#
# One hop: (frontier key, neighbour key, declared) for the frontier's neighbours on one side.
# First every such edge, as long as there are fewer than HOP_ROWS_PER_NODE x the node limit (the
# common case: one cheap prepared query; "now" reads only columns of asset_edges' covering
# indexes, so index-only scans). A hop with more, typically out of a hub with 100k dependants,
# is asked again for only the rows the walk can use, so they never leave the server:
# - per frontier key, its first `admitted + room + 1` neighbours in key order ("C": code points,
#   as Python sorts). That holds every candidate the walk may admit: a candidate among the first
#   room + 1 new assets of the hop is preceded, in any key's list, by at most the admitted assets
#   and `room` other candidates; and one more shows that the limit cuts the hop (the key itself,
#   admitted but never its own neighbour, leaves one row to spare);
# - for the keys whose list was cut there, their edges into assets already admitted (their depth
#   on this side, their edges), looked up by both keys.
HOP_ROWS_PER_NODE = 10
_ALL = sql.SQL("SELECT near, far, declared FROM ({edges}) x LIMIT %(cap)s")
_FIRST_PER_KEY = sql.SQL(
    "SELECT f.near, x.far, x.declared FROM unnest(string_to_array(%(frontier)s, E'\\n')) AS f(near) "
    "CROSS JOIN LATERAL (SELECT far, declared FROM ({edges}) e ORDER BY far COLLATE \"C\" LIMIT %(per_key)s) x")
_INTO_ADMITTED = sql.SQL(
    "SELECT near, far, declared FROM ({edges}) e WHERE far = ANY(string_to_array(%(admitted)s, E'\\n'))")
_FRONTIER = sql.SQL("= ANY(string_to_array(%(frontier)s, E'\\n'))")
_NEIGHBOURS = {
    (form, side, as_of): query.format(edges=links_near(side, matches, as_of))
    for form, query, matches in (("all", _ALL, _FRONTIER), ("first", _FIRST_PER_KEY, sql.SQL("= f.near")),
                                 ("admitted", _INTO_ADMITTED, _FRONTIER))
    for side in ("upstream", "downstream") for as_of in (False, True)
}

# Headline state of the answer's nodes: name, last status and time, each row with its key's place in
# the list sent (1-based), not the key itself, and fetched in binary: the key is known here already
# (1,000 rows at 10M edges: 7.1 against 8.2 ms p50 alone, about 0.3 ms of a whole walk).
# (LATERAL ... LIMIT 1 keeps the planner on lookups by key, through the hash indexes of migration
# 0008; as a plain join it hashes the whole of asset_properties as soon as it expects a few hundred
# keys.)
_NODES_NOW = """
SELECT k.place, p.name, a.last_status, a.last_materialized_at
FROM unnest(string_to_array(%(keys)s, E'\\n')) WITH ORDINALITY AS k(key, place)
LEFT JOIN LATERAL (SELECT last_status, last_materialized_at FROM assets WHERE key = k.key LIMIT 1) a ON true
LEFT JOIN LATERAL (SELECT name FROM asset_properties WHERE key = k.key LIMIT 1) p ON true
"""
_NODES_AS_OF = sql.SQL("""
SELECT k.place, pr.properties ->> 'name', m.status, m.event_time
FROM unnest(string_to_array(%(keys)s, E'\\n')) WITH ORDINALITY AS k(key, place)
LEFT JOIN LATERAL ({properties}) pr ON true
LEFT JOIN LATERAL (
    SELECT h.status, h.event_time FROM lineage_history h
     WHERE h.asset_key = k.key AND h.event_type = 'materialization' AND h.event_time <= %(as_of)s
     ORDER BY h.event_time DESC, h.event_id DESC LIMIT 1
) m ON true
""").format(properties=PROPERTIES_AS_OF)

_EDGES = TypeAdapter(list[LineageEdge])


@dataclass
class _Walk:
    """The state of one walk: admitted nodes (in admission order), depths per side, edges."""

    root: str
    limit: int
    admitted: dict[str, None] = field(default_factory=dict)
    depths: dict[str, dict[str, int]] = field(default_factory=dict)
    edges: dict[tuple[str, str], str] = field(default_factory=dict)
    truncated: bool = False

    def admit_hop(self, side: str, hop: int, rows: list[tuple[Any, ...]]) -> list[str]:
        """Record one hop's rows; returns the next frontier (this side's new nodes, by key).

        Admitted in key order within the hop, so a one-sided walk's admission order is already the
        answer's (depth, key) order (`_graph` relies on it)."""
        seen = self.depths[side]
        admitted = self.admitted
        new = sorted({row[1] for row in rows} - seen.keys())
        costly = [key for key in new if key not in admitted]
        room = self.limit - len(admitted)
        if len(costly) > room:
            self.truncated = True
            dropped = set(costly[room:])
            new = [key for key in new if key not in dropped]
        seen.update(dict.fromkeys(new, hop))
        admitted.update(dict.fromkeys(new))  # an asset the other side admitted keeps its place
        edges, upstream = self.edges, side == "upstream"
        for near, far, declared in rows:
            if far in admitted:
                edges[(far, near) if upstream else (near, far)] = declared
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
            frontiers[side] = state.admit_hop(side, hop, _hop(conn, state, side, frontiers[side], as_of))
    return _graph(conn, state, direction, depth, as_of)


def _hop(conn: psycopg.Connection, state: _Walk, side: str, frontier: list[str],
         as_of: datetime | None) -> list[tuple[Any, ...]]:
    """The rows of one hop that `_Walk.admit_hop` needs (see _NEIGHBOURS)."""
    cap = HOP_ROWS_PER_NODE * state.limit
    params = {"frontier": "\n".join(frontier), "cap": cap, "as_of": as_of}
    rows = conn.execute(_NEIGHBOURS[("all", side, as_of is not None)], params).fetchall()
    if len(rows) < cap:
        return rows
    params.update(per_key=state.limit + 1)  # admitted + room + 1
    # Never prepared: a generic plan cannot see the lists' sizes (10x slower on a hub, measured).
    rows = conn.execute(_NEIGHBOURS[("first", side, as_of is not None)], params, prepare=False).fetchall()
    per_key: dict[str, int] = {}
    for near, _, _ in rows:
        per_key[near] = per_key.get(near, 0) + 1
    cut = [near for near, count in per_key.items() if count >= state.limit + 1]
    if cut:
        params.update(frontier="\n".join(cut), admitted="\n".join(state.admitted))
        rows += conn.execute(_NEIGHBOURS[("admitted", side, as_of is not None)], params, prepare=False).fetchall()
    return rows


def _graph(conn: psycopg.Connection, state: _Walk, direction: Direction, depth: int | None,
           as_of: datetime | None) -> LineageGraph:
    params = {"keys": "\n".join(state.admitted), "as_of": as_of}
    # Pipeline mode sends the headline query at once and waits only at fetchall(): meanwhile this
    # thread builds and validates the edges (about a third of a 1,000-node answer's Python time),
    # which do not depend on it.
    with conn.pipeline():
        cursor = conn.execute(_NODES_AS_OF if as_of else _NODES_NOW, params, binary=True)  # type: ignore[call-overload]
        # Sorting the (upstream, downstream) keys alone, not (key, declared) items: the keys are unique.
        edges = _EDGES.validate_python([{"upstream": up, "downstream": down, "declared": state.edges[up, down]}
                                        for up, down in sorted(state.edges)])
        places: list[tuple[Any, ...]] = [()] * len(state.admitted)
        for row in cursor.fetchall():  # one row per key sent (left joins), each with its place
            places[row[0] - 1] = row[1:]
    headline = dict(zip(state.admitted, places, strict=True))
    up_depths = state.depths.get("upstream", {})
    down_depths = state.depths.get("downstream", {})
    if len(state.depths) == 1:
        ordered = list(state.admitted)  # already by (depth, key): see _Walk.admit_hop
    else:
        far = len(state.admitted)
        ordered = sorted(state.admitted, key=lambda key: (min(up_depths.get(key, far), down_depths.get(key, far)), key))

    # Validating plain dicts in one call: pydantic-core builds the thousands of nested models faster
    # than constructing them one by one (or even model_construct, which is Python). The edges are
    # models already, which pydantic keeps as they are.
    # (strict=True measured no faster, interleaved, and would refuse a depth of True or 3.0.)
    nodes = []
    for key in ordered:
        name, status, materialized_at = headline[key]
        nodes.append({"key": key, "upstream_depth": up_depths.get(key), "downstream_depth": down_depths.get(key),
                      "name": name, "last_status": status, "last_materialized_at": materialized_at})
    return LineageGraph.model_validate({
        "root": state.root, "direction": direction, "depth": depth, "as_of": as_of, "limit": state.limit,
        "truncated": state.truncated, "nodes": nodes, "edges": edges})
