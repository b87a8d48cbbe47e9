"""Row-for-row comparison of live projection tables with their rebuilt shadow copies.

This is how `assetlog replay --check` audits a projection: the shadow tables
hold what the topics say the tables must be, so every row the rebuild has and
the live table lacks is *missing*, every row the live table has and the
rebuild lacks is *extra*, and a row present in both (same primary key) with
other values is *different*. Counts come from one full outer join per table;
a few examples of each kind are fetched only when there are some.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from assetlog.errors import AssetlogError
from assetlog.projections.edge_merge import explicit_events

# Columns that record when a row was written, not what the events say: never compared.
WALL_CLOCK_COLUMNS = {"dead_letters": ("recorded_at",), "consumer_offsets": ("updated_at",)}

# Columns compared by what they mean, not as stored: a history payload written before migration 0009 holds
# the whole event, one written since only the fields without a column of their own (so a live table
# written by an older version and its rebuild differ in form only). Both are compared as the whole event
# that migration's function gives back, with the function of the live tables' schema. Likewise an edge's
# explicit_since, which an explicit edge written by a consumer of a version before migration 0010 lacks.
_WHOLE_EVENT_ARGUMENTS = ("event_type", "event_id", "event_time", "asset_key", "upstream_key", "status",
                          "materialization_event_id", "flow_run_id", "flow_name", "task_run_id", "task_name",
                          "payload")


def _whole_event(schema: str, alias: str) -> sql.Composable:
    return sql.SQL("{}({})").format(sql.Identifier(schema, "assetlog_lineage_event"),
                                    sql.SQL(", ").join(sql.Identifier(alias, a) for a in _WHOLE_EVENT_ARGUMENTS))


def _first_explicit(schema: str, alias: str) -> sql.Composable:
    """An edge's explicit_since; for an explicit edge without it ("not known": written by a consumer of a
    version before migration 0010), the time its history gives, as walks as of a time read it
    (`edge_merge.DECLARED_AS_OF`)."""
    history = sql.Identifier(schema, "lineage_history")
    return sql.SQL(
        "COALESCE({e}.explicit_since, CASE WHEN {e}.declared = 'explicit' THEN "
        "(SELECT min(h.event_time) FROM {h} h WHERE {explicit}) END)").format(
        e=sql.Identifier(alias), h=history, explicit=explicit_events(sql.Identifier(alias)))


COMPARED_AS = {"lineage_history": {"payload": _whole_event}, "asset_edges": {"explicit_since": _first_explicit}}


@dataclass
class TableDrift:
    """How one live table differs from its rebuild."""

    table: str
    live_rows: int
    rebuilt_rows: int
    missing: int = 0
    extra: int = 0
    different: int = 0
    examples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return bool(self.missing or self.extra or self.different)

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "live_rows": self.live_rows, "rebuilt_rows": self.rebuilt_rows,
                "missing": self.missing, "extra": self.extra, "different": self.different,
                "examples": self.examples}


def primary_key(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_constraint k CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, n) "
        "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum "
        "WHERE k.conrelid = to_regclass(quote_ident(%s) || '.' || quote_ident(%s)) AND k.contype = 'p' "
        "ORDER BY u.n", (schema, table)).fetchall()
    if not rows:
        raise AssetlogError(f"{schema}.{table} has no primary key to compare rows by")
    return [str(r[0]) for r in rows]


def _columns(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(%s) || '.' || quote_ident(%s)) "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (schema, table)).fetchall()
    return [str(r[0]) for r in rows]


def compare_table(conn: psycopg.Connection, live_schema: str, shadow_schema: str, table: str, *,
                  projection: str | None = None, examples: int = 3) -> TableDrift:
    """Compare `live_schema.table` with `shadow_schema.table` by primary key, in the caller's snapshot.

    `projection` restricts both sides to that projection's rows (for the
    bookkeeping tables shared by the projections, e.g. dead_letters).
    """
    key = primary_key(conn, live_schema, table)
    ignored = WALL_CLOCK_COLUMNS.get(table, ())
    columns = [c for c in _columns(conn, live_schema, table) if c not in ignored]
    if columns != [c for c in _columns(conn, shadow_schema, table) if c not in ignored]:
        raise AssetlogError(f"{shadow_schema}.{table} does not have the columns of {live_schema}.{table}")

    def side(schema: str) -> sql.Composable:
        source = sql.Identifier(schema, table)
        if projection is None:
            return source
        return sql.SQL("(SELECT * FROM {} WHERE projection = {})").format(source, sql.Literal(projection))

    meaning = COMPARED_AS.get(table, {})

    def value(alias: str, column: str) -> sql.Composable:
        return meaning[column](live_schema, alias) if column in meaning else sql.Identifier(alias, column)

    def row(alias: str) -> sql.Composable:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(value(alias, c) for c in columns))

    def as_json(alias: str) -> sql.Composable:  # a row for the examples, its columns as compared
        if not meaning:
            return sql.SQL("to_jsonb({})").format(sql.Identifier(alias))
        return sql.SQL("to_jsonb({}) || jsonb_build_object({})").format(sql.Identifier(alias), sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(c), value(alias, c)) for c in meaning))

    joined = sql.SQL("{live} AS l FULL JOIN {shadow} AS s ON {on}").format(
        live=side(live_schema), shadow=side(shadow_schema),
        on=sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier("l", k), sql.Identifier("s", k))
                                 for k in key))
    live_absent = sql.SQL("{} IS NULL").format(sql.Identifier("l", key[0]))
    shadow_absent = sql.SQL("{} IS NULL").format(sql.Identifier("s", key[0]))
    differs = sql.SQL("NOT {} AND NOT {} AND {} IS DISTINCT FROM {}").format(
        live_absent, shadow_absent, row("l"), row("s"))
    counts = conn.execute(sql.SQL(
        "SELECT count(*) FILTER (WHERE NOT {la}), count(*) FILTER (WHERE NOT {sa}), count(*) FILTER (WHERE {la}), "
        "count(*) FILTER (WHERE {sa}), count(*) FILTER (WHERE {differs}) FROM {joined}"
    ).format(la=live_absent, sa=shadow_absent, differs=differs, joined=joined)).fetchone()
    assert counts is not None
    drift = TableDrift(table, counts[0], counts[1], missing=counts[2], extra=counts[3], different=counts[4])
    if drift.missing:
        drift.examples["missing"] = [_keyed(key, r) for r in _examples(
            conn, as_json("s"), joined, live_absent, examples)]
    if drift.extra:
        drift.examples["extra"] = [_keyed(key, r) for r in _examples(
            conn, as_json("l"), joined, shadow_absent, examples)]
    if drift.different:
        pairs = _examples(conn, sql.SQL("jsonb_build_array({}, {})").format(as_json("l"), as_json("s")), joined,
                          differs, examples)
        drift.examples["different"] = [_difference(key, live, rebuilt, ignored) for live, rebuilt in pairs]
    return drift


def _examples(conn: psycopg.Connection, what: sql.Composable, joined: sql.Composable, where: sql.Composable,
              limit: int) -> list[Any]:
    return [r[0] for r in conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} LIMIT {}").format(
        what, joined, where, sql.Literal(limit))).fetchall()]


def _keyed(key: Sequence[str], row: dict[str, Any]) -> dict[str, Any]:
    """A row as its key and the whole row."""
    return {"key": {k: row[k] for k in key}, "row": row}


def _difference(key: Sequence[str], live: dict[str, Any], rebuilt: dict[str, Any],
                ignored: Sequence[str]) -> dict[str, Any]:
    """The row's key and, per differing column, the live value and the rebuilt one."""
    return {
        "key": {k: live[k] for k in key},
        "columns": {c: {"live": live[c], "rebuilt": rebuilt.get(c)} for c in live
                    if c not in ignored and live[c] != rebuilt.get(c)},
    }
