"""The lineage graph's edges as the read side sees them, now and as of a time: stated once here.

An edge (upstream -> downstream) exists from its first dependency event on;
it is `explicit` if any of its events declared it so, else `inferred`; it
was first / last seen at the min / max event_time of its events. "Now" these
are the `asset_edges` rows the lineage projection maintains with that rule
(whose one home is `assetlog.projections.edge_merge`). "As of T":

- `edges_near` (the asset details' neighbours, with their first and last seen
  at T) derives them with the same rule from the dependency events in
  `lineage_history` with event_time <= %(as_of)s;
- `links_near` (the walks, which need only the keys and the declaration) reads
  `asset_edges` rows first seen by T, declared as of T by their
  `explicit_since` (`edge_merge.DECLARED_AS_OF`): one row per edge instead of
  a history row per event. `tests/test_edge_merge.py` checks the two agree.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql

from assetlog.projections.edge_merge import DECLARED_AS_OF, OF_EVENTS

Side = Literal["upstream", "downstream"]

# (near column, far column) for a side, in asset_edges and in lineage_history's dependency rows.
_NOW_COLUMNS = {"upstream": ("downstream_key", "upstream_key"), "downstream": ("upstream_key", "downstream_key")}
_HISTORY_COLUMNS = {"upstream": ("asset_key", "upstream_key"), "downstream": ("upstream_key", "asset_key")}


def edges_near(side: Side, near_matches: sql.Composable, as_of: bool) -> sql.Composed:
    """A subquery of the edges on `side` of the assets whose key satisfies `near_matches` (SQL that
    follows the key column, e.g. `= %(key)s`). Columns: near (the matched asset), far (its neighbour
    on that side), declared, first_seen, last_seen.

    "Now" is a plain selection from `asset_edges`, which the planner flattens: a caller selecting
    only near, far and declared keeps the index-only scans of the covering indexes.
    """
    if not as_of:
        near, far = _NOW_COLUMNS[side]
        return sql.SQL(
            "SELECT {near} AS near, {far} AS far, declared, first_seen, last_seen FROM asset_edges "
            "WHERE {near} {matches}").format(near=sql.Identifier(near), far=sql.Identifier(far),
                                             matches=near_matches)
    near, far = _HISTORY_COLUMNS[side]
    return sql.SQL(
        "SELECT {near} AS near, {far} AS far, {declared} AS declared, {first_seen} AS first_seen, "
        "{last_seen} AS last_seen FROM lineage_history "
        "WHERE {near} {matches} AND event_type = 'dependency' AND event_time <= %(as_of)s "
        "GROUP BY {near}, {far}").format(near=sql.Identifier(near), far=sql.Identifier(far),
                                         matches=near_matches, declared=OF_EVENTS["declared"],
                                         first_seen=OF_EVENTS["first_seen"], last_seen=OF_EVENTS["last_seen"])


def links_near(side: Side, near_matches: sql.Composable, as_of: bool) -> sql.Composed:
    """A subquery of the edges on `side` of the assets whose key satisfies `near_matches`, from
    `asset_edges`, now or as of %(as_of)s. Columns: near, far, declared.

    "Now" reads only columns of the covering indexes (index-only scans); "as of" also reads each edge's
    row for its first_seen and explicit_since.
    """
    near, far = _NOW_COLUMNS[side]
    if not as_of:
        return sql.SQL("SELECT {near} AS near, {far} AS far, declared FROM asset_edges WHERE {near} {matches}").format(
            near=sql.Identifier(near), far=sql.Identifier(far), matches=near_matches)
    return sql.SQL(
        "SELECT {near} AS near, {far} AS far, {declared} AS declared FROM asset_edges "
        "WHERE {near} {matches} AND first_seen <= %(as_of)s").format(
        near=sql.Identifier(near), far=sql.Identifier(far), matches=near_matches, declared=DECLARED_AS_OF)
