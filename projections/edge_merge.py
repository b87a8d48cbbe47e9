"""How an edge's dependency events merge into its `asset_edges` row: the rule, stated once here.

An edge (upstream -> downstream) is `explicit` if any of its dependency events
declared it so, else `inferred`; it was first / last seen at the min / max
event_time of its events; `last_event_id` is its newest event by (event_time,
event_id); `explicit_since` is the event_time of its first explicit event (none
while it is inferred), so the edge's declaration as of any time T is known from
its row alone (`DECLARED_AS_OF`). Each part is order-independent, so events
merge in any order and any batching. The rule takes three forms, kept side by
side in `_RULES`:

- over a group of `lineage_history` dependency rows (`edges_of_history`: a replay's
  edges, once its history is loaded; the read side's "as of" in `assetlog.query.edges` uses the same parts);
- a batch's edge merged into the stored row (`upsert_edges`: the live projection);
- one event merged into a batch's edge in Python (`merge_dependency`: `reduce`).

`tests/test_edge_merge.py` checks on the real PostgreSQL that the three give the
same rows for generated event sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from psycopg import sql

EXPLICIT, INFERRED = "explicit", "inferred"

EDGES_COLUMNS = (
    ("upstream_key", "text"), ("downstream_key", "text"), ("declared", "text"),
    ("first_seen", "timestamptz"), ("last_seen", "timestamptz"), ("last_event_id", "uuid"),
    ("explicit_since", "timestamptz"),
)


class _Rule(NamedTuple):
    column: str
    of_events: sql.Composable  # aggregate over one edge's dependency rows of lineage_history
    merged: sql.Composable  # the stored row `t` merged with a batch's row `EXCLUDED`
    changes: sql.Composable  # when the batch's row changes the stored one (else no update is written)


_NEWER = sql.SQL("(EXCLUDED.last_seen, EXCLUDED.last_event_id) > (t.last_seen, t.last_event_id)")
_RULES = (
    _Rule("declared",
          sql.SQL("CASE WHEN bool_or(payload ->> 'declared' = 'EXPLICIT') THEN {e} ELSE {i} END").format(
              e=sql.Literal(EXPLICIT), i=sql.Literal(INFERRED)),
          sql.SQL("CASE WHEN EXCLUDED.declared = {e} THEN {e} ELSE t.declared END").format(e=sql.Literal(EXPLICIT)),
          sql.SQL("(EXCLUDED.declared = {e} AND t.declared <> {e})").format(e=sql.Literal(EXPLICIT))),
    _Rule("first_seen", sql.SQL("min(event_time)"), sql.SQL("LEAST(t.first_seen, EXCLUDED.first_seen)"),
          sql.SQL("EXCLUDED.first_seen < t.first_seen")),
    _Rule("last_seen", sql.SQL("max(event_time)"), sql.SQL("GREATEST(t.last_seen, EXCLUDED.last_seen)"), _NEWER),
    _Rule("last_event_id", sql.SQL("(array_agg(event_id ORDER BY event_time DESC, event_id DESC))[1]"),
          sql.SQL("CASE WHEN {newer} THEN EXCLUDED.last_event_id ELSE t.last_event_id END").format(newer=_NEWER),
          _NEWER),
    # An explicit edge without explicit_since ("not known": written by a consumer of a version before migration
    # 0010; `DECLARED_AS_OF` looks it up in the history): merging a batch into it must not make one up from the
    # batch's events alone.
    _Rule("explicit_since",
          sql.SQL("min(event_time) FILTER (WHERE payload ->> 'declared' = 'EXPLICIT')"),
          sql.SQL("CASE WHEN t.declared = {e} AND t.explicit_since IS NULL THEN NULL "
                  "ELSE LEAST(t.explicit_since, EXCLUDED.explicit_since) END").format(e=sql.Literal(EXPLICIT)),
          sql.SQL("EXCLUDED.explicit_since < t.explicit_since")),
)
assert tuple(rule.column for rule in _RULES) == tuple(name for name, _ in EDGES_COLUMNS[2:])

# The parts of the rule over history rows, by column (`assetlog.query.edges` derives "as of" from them).
OF_EVENTS = {rule.column: rule.of_events for rule in _RULES}


def explicit_events(edge: sql.Composable) -> sql.Composed:
    """The condition on rows `h` of a lineage_history table that are explicit dependency events of the
    `asset_edges` row `edge` (an alias): for an explicit edge without explicit_since.

    The upstream key is compared under "C" (the same equality under any deterministic collation), which
    leaves the planner only the downstream's index: through the upstream's, an edge out of a hub read its
    100k events to find one (1.7 s against 0.7 ms per hop at 10M edges, bench/README.md "As-of walks from
    the edges")."""
    return sql.SQL(
        "h.asset_key = {e}.downstream_key AND h.upstream_key = {e}.upstream_key COLLATE \"C\" "
        "AND h.event_type = 'dependency' AND h.payload ->> 'declared' = 'EXPLICIT'").format(e=edge)


# An `asset_edges` row's declaration as of %(as_of)s (the row existed then: first_seen <= as_of): explicit once
# its first explicit event is that old. An explicit row without explicit_since looks for such an event in the
# history, as every "as of" did. `OFFSET 0` keeps PostgreSQL from turning that EXISTS into one hash of every
# explicit event in the history (4 s per hop at 10M edges).
DECLARED_AS_OF = sql.SQL(
    "CASE WHEN asset_edges.explicit_since <= %(as_of)s THEN {e} "
    "WHEN asset_edges.declared = {i} OR asset_edges.explicit_since IS NOT NULL THEN {i} "
    "WHEN EXISTS (SELECT FROM lineage_history h WHERE {explicit} AND h.event_time <= %(as_of)s OFFSET 0) "
    "THEN {e} ELSE {i} END").format(
    e=sql.Literal(EXPLICIT), i=sql.Literal(INFERRED),
    explicit=explicit_events(sql.Identifier("asset_edges")))


def edges_of_history(history: sql.Composable) -> sql.Composed:
    """SELECT every edge of the dependency rows of `history` (a lineage_history table), in EDGES_COLUMNS order.

    Grouped by the keys' bytes (`COLLATE "C"`): the groups are the same (equal text is equal bytes under
    any deterministic collation), and the sort behind them compares bytes, not locale rules: 0.85-0.9x the
    time for a million events' history (bench/README.md, issue 15, eleventh pass)."""
    return sql.SQL('SELECT upstream_key COLLATE "C" AS upstream_key, asset_key COLLATE "C" AS downstream_key, '
                   "{merged} FROM {history} WHERE event_type = 'dependency' "
                   'GROUP BY upstream_key COLLATE "C", asset_key COLLATE "C"').format(
        merged=sql.SQL(", ").join(sql.SQL("{} AS {}").format(rule.of_events, sql.Identifier(rule.column))
                                  for rule in _RULES), history=history)


def upsert_edges(target: sql.Composable, batch: sql.Composable) -> sql.Composed:
    """Merge the edges of `batch` (a table with EDGES_COLUMNS, one row per edge) into `target` (asset_edges);
    a row the merge leaves as it is is not rewritten."""
    columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in EDGES_COLUMNS)
    changes: list[sql.Composable] = []
    for rule in _RULES:
        if rule.changes not in changes:
            changes.append(rule.changes)
    return sql.SQL(
        "INSERT INTO {target} AS t ({columns}) SELECT {columns} FROM {batch} ORDER BY upstream_key, downstream_key "
        "ON CONFLICT (upstream_key, downstream_key) DO UPDATE SET {merged} WHERE {changes}"
    ).format(target=target, columns=columns, batch=batch,
             merged=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(rule.column), rule.merged)
                                       for rule in _RULES),
             changes=sql.SQL(" OR ").join(changes))


@dataclass(slots=True)
class EdgeRow:
    """A batch's edge as `reduce` merges it (an `asset_edges` row: `as_tuple`)."""

    upstream_key: str
    downstream_key: str
    explicit_since: datetime | None  # the first explicit event's time; None: inferred
    first_seen: datetime
    last_seen: datetime
    last_event_id: str

    def as_tuple(self) -> tuple[object, ...]:
        return (self.upstream_key, self.downstream_key, INFERRED if self.explicit_since is None else EXPLICIT,
                self.first_seen, self.last_seen, self.last_event_id, self.explicit_since)


def merge_dependency(edges: dict[tuple[str, str], EdgeRow], pair: tuple[str, str], explicit: bool,
                     sort_key: tuple[datetime, str]) -> None:
    """Merge one dependency event (declared explicitly or not; its (event_time, event_id)) into the edge
    `pair` of `edges`: `_RULES` in Python."""
    edge = edges.get(pair)
    time = sort_key[0]
    if edge is None:
        edges[pair] = EdgeRow(*pair, time if explicit else None, time, *sort_key)
        return
    if explicit and (edge.explicit_since is None or time < edge.explicit_since):
        edge.explicit_since = time
    edge.first_seen = min(edge.first_seen, time)
    if sort_key > (edge.last_seen, edge.last_event_id):
        edge.last_seen, edge.last_event_id = sort_key
