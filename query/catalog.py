"""Questions about single assets: details (now or as of a time), search, materialization history.

"Now" reads the current tables (`assets`, `asset_properties`, `asset_edges`);
"as of T" reads only the append-only `lineage_history`, applying the same
rules the projections apply to the events with event_time <= T. So an as-of
answer at a time after the newest event equals the current answer, which
the tests check.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from assetlog.errors import AssetlogError
from assetlog.query.edges import edges_near
from assetlog.query.models import (
    AssetDetails,
    AssetMetadata,
    AssetPage,
    AssetProperties,
    AssetSummary,
    HistoryEntry,
    HistoryPage,
    MaterializationRun,
    Neighbour,
)
from assetlog.query.timeparse import parse_time

NIL_UUID = uuid.UUID(int=0)


class AssetNotFound(AssetlogError):
    """The key is not in the projection database (or had not been seen yet at the as-of time)."""


# The newest event carrying properties for k.key with event_time <= %(as_of)s: a materialization
# of the asset declared with properties, or a dependency naming it as an upstream given as a full
# Asset. Columns: properties (jsonb), event_time, event_id. Used as a LATERAL subquery.
PROPERTIES_AS_OF = sql.SQL("""
SELECT c.properties, c.event_time, c.event_id FROM (
    (SELECT h.payload -> 'properties' AS properties, h.event_time, h.event_id FROM lineage_history h
      WHERE h.asset_key = k.key AND h.event_type = 'materialization'
        AND jsonb_typeof(h.payload -> 'properties') = 'object' AND h.event_time <= %(as_of)s
      ORDER BY h.event_time DESC, h.event_id DESC LIMIT 1)
    UNION ALL
    (SELECT h.payload -> 'upstream_properties', h.event_time, h.event_id FROM lineage_history h
      WHERE h.upstream_key = k.key AND h.event_type = 'dependency'
        AND jsonb_typeof(h.payload -> 'upstream_properties') = 'object' AND h.event_time <= %(as_of)s
      ORDER BY h.event_time DESC, h.event_id DESC LIMIT 1)
) c ORDER BY c.event_time DESC, c.event_id DESC LIMIT 1
""")

_DETAILS_NOW = """
SELECT a.first_seen, a.last_seen,
       a.last_materialization_event_id, a.last_materialized_at, a.last_status, a.last_materialized_by,
       a.last_error_type, a.last_error_message, h.task_name, h.task_run_id, h.flow_name, h.flow_run_id,
       a.metadata, a.metadata_time, a.metadata_event_id, a.metadata_materialization_event_id,
       p.name, p.description, p.owners, p.url, p.event_time, p.event_id
FROM assets a
LEFT JOIN asset_properties p ON p.key = a.key
LEFT JOIN lineage_history h ON h.event_id = a.last_materialization_event_id
    AND h.event_time = a.last_materialized_at  -- the partition key: only that month's partition is read
WHERE a.key = %(key)s
"""

_DETAILS_AS_OF = sql.SQL("""
SELECT seen.first_seen, seen.last_seen,
       m.event_id, m.event_time, m.status, m.payload ->> 'by',
       m.payload -> 'error' ->> 'type', m.payload -> 'error' ->> 'message',
       m.task_name, m.task_run_id, m.flow_name, m.flow_run_id,
       md.payload -> 'metadata', md.event_time, md.event_id, md.materialization_event_id,
       pr.properties ->> 'name', pr.properties ->> 'description',
       CASE WHEN jsonb_typeof(pr.properties -> 'owners') = 'array'
            THEN ARRAY(SELECT jsonb_array_elements_text(pr.properties -> 'owners')) END,
       pr.properties ->> 'url', pr.event_time, pr.event_id
FROM (SELECT %(key)s::text AS key) k
CROSS JOIN LATERAL (
    SELECT min(t) AS first_seen, max(t) AS last_seen FROM (
        (SELECT event_time AS t FROM lineage_history WHERE asset_key = k.key AND event_time <= %(as_of)s
          ORDER BY event_time LIMIT 1)
        UNION ALL
        (SELECT event_time FROM lineage_history WHERE asset_key = k.key AND event_time <= %(as_of)s
          ORDER BY event_time DESC LIMIT 1)
        UNION ALL
        (SELECT event_time FROM lineage_history WHERE upstream_key = k.key AND event_time <= %(as_of)s
          ORDER BY event_time LIMIT 1)
        UNION ALL
        (SELECT event_time FROM lineage_history WHERE upstream_key = k.key AND event_time <= %(as_of)s
          ORDER BY event_time DESC LIMIT 1)
    ) times
) seen
LEFT JOIN LATERAL (
    SELECT * FROM lineage_history h WHERE h.asset_key = k.key AND h.event_type = 'materialization'
       AND h.event_time <= %(as_of)s ORDER BY h.event_time DESC, h.event_id DESC LIMIT 1
) m ON true
LEFT JOIN LATERAL (
    SELECT * FROM lineage_history h WHERE h.asset_key = k.key AND h.event_type = 'metadata'
       AND h.event_time <= %(as_of)s
     ORDER BY h.event_time DESC, h.materialization_event_id DESC, h.event_id DESC LIMIT 1
) md ON true
LEFT JOIN LATERAL ({properties}) pr ON true
""").format(properties=PROPERTIES_AS_OF)

# Direct neighbours: one page of %(n)s in key order (after %(after)s when continuing), and the
# full count apart, so that a hub's page reads 50 index entries, not its 100k neighbours.
_NEIGHBOURS = {
    (side, as_of, continued): sql.SQL("SELECT far, declared, first_seen, last_seen FROM ({edges}) e {after} "
                                      "ORDER BY far LIMIT %(n)s").format(
        edges=edges_near(side, sql.SQL("= %(key)s"), as_of),
        after=sql.SQL("WHERE far > %(after)s" if continued else ""))
    for side in ("upstream", "downstream") for as_of in (False, True) for continued in (False, True)
}
_NEIGHBOUR_COUNT = {
    (side, as_of): sql.SQL("SELECT count(*) FROM ({edges}) e").format(
        edges=edges_near(side, sql.SQL("= %(key)s"), as_of))
    for side in ("upstream", "downstream") for as_of in (False, True)
}


def asset_details(conn: psycopg.Connection, key: str, as_of: datetime | None, neighbour_limit: int,
                  after: dict[str, str | None] | None = None) -> AssetDetails:
    """One asset now (current tables) or as of a time (history only); AssetNotFound if unknown.

    `after` maps a side ("upstream", "downstream") to the key its neighbour list continues after."""
    params = {"key": key, "as_of": as_of, "n": neighbour_limit}
    row = conn.execute(_DETAILS_AS_OF if as_of else _DETAILS_NOW, params).fetchone()
    if row is None or row[0] is None:
        raise _not_found(conn, key, as_of)
    (first_seen, last_seen, m_id, m_time, m_status, m_by, err_type, err_message, task_name, task_run_id,
     flow_name, flow_run_id, metadata, md_time, md_id, md_materialization,
     name, description, owners, url, p_time, p_id) = row
    run = None
    if m_id is not None:
        run = MaterializationRun(
            event_id=m_id, event_time=m_time, status=m_status, by=m_by, error_type=err_type,
            error_message=err_message, task_name=task_name, task_run_id=task_run_id, flow_name=flow_name,
            flow_run_id=flow_run_id)
    neighbours: dict[str, tuple[list[Neighbour], int]] = {}
    for side in ("upstream", "downstream"):
        continue_after = (after or {}).get(side)
        rows = conn.execute(_NEIGHBOURS[(side, as_of is not None, continue_after is not None)],
                            {**params, "after": continue_after}).fetchall()
        count = conn.execute(_NEIGHBOUR_COUNT[(side, as_of is not None)], params).fetchone()[0]  # type: ignore[index]
        neighbours[side] = ([Neighbour(key=r[0], declared=r[1], first_seen=r[2], last_seen=r[3]) for r in rows],
                            count)
    return AssetDetails(
        key=key, as_of=as_of, first_seen=first_seen, last_seen=last_seen,
        properties=AssetProperties(name=name, description=description, owners=owners, url=url,
                                   event_time=p_time, event_id=p_id) if p_id is not None else None,
        last_materialization=run,
        metadata=AssetMetadata(metadata=metadata, event_time=md_time, event_id=md_id,
                               materialization_event_id=md_materialization) if md_id is not None else None,
        metadata_is_from_last_materialization=md_id is not None and md_materialization == m_id,
        upstream=neighbours["upstream"][0], upstream_count=neighbours["upstream"][1],
        downstream=neighbours["downstream"][0], downstream_count=neighbours["downstream"][1],
    )


def database_name(conn: psycopg.Connection) -> str:
    """Which database a connection reads, for messages: `'name' on host:port` (a wrong DSN shows)."""
    info = conn.info
    return f"{info.dbname!r} on {info.host}:{info.port}"


def _not_found(conn: psycopg.Connection, key: str, as_of: datetime | None) -> AssetNotFound:
    if as_of is not None:
        row = conn.execute("SELECT first_seen FROM assets WHERE key = %s", (key,)).fetchone()
        if row is not None:
            return AssetNotFound(
                f"asset {key!r} had not been seen yet at {as_of.isoformat()} (first seen {row[0].isoformat()} "
                f"in database {database_name(conn)})")
    return AssetNotFound(f"no asset {key!r} in database {database_name(conn)} "
                         "(keys are exact; try `assetlog assets --search`)")


def require_asset(conn: psycopg.Connection, key: str, as_of: datetime | None = None) -> None:
    """Raise AssetNotFound unless the key is known (at `as_of`, when given)."""
    if as_of is None:
        query = ("SELECT EXISTS (SELECT FROM assets WHERE key = %(key)s) "
                 "OR EXISTS (SELECT FROM asset_edges WHERE upstream_key = %(key)s OR downstream_key = %(key)s)")
    else:
        query = ("SELECT EXISTS (SELECT FROM lineage_history WHERE asset_key = %(key)s AND event_time <= %(as_of)s) "
                 "OR EXISTS (SELECT FROM lineage_history WHERE upstream_key = %(key)s AND event_time <= %(as_of)s)")
    row = conn.execute(query, {"key": key, "as_of": as_of}).fetchone()
    if not row or not row[0]:
        raise _not_found(conn, key, as_of)


# --- search ----------------------------------------------------------------------------------------

def like_pattern(text: str) -> str:
    """`%text%` for ILIKE with the user's % _ and \\ taken literally (keys are full of underscores)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_assets(conn: psycopg.Connection, search: str | None, owner: str | None, limit: int,
                  after: str | None) -> AssetPage:
    """Assets in key order whose key, name, description or an owner contains `search` (any case),
    owned by `owner` (exact) when given; `after` continues a previous page."""
    conditions: list[sql.Composable] = []
    if search:
        # Two indexed searches (trigram on assets.key, and on the properties' search text), united.
        conditions.append(sql.SQL(
            "a.key IN (SELECT key FROM assets WHERE key ILIKE %(pattern)s UNION "
            "SELECT key FROM asset_properties "
            "WHERE assetlog_search_text(key, name, description, owners) ILIKE %(pattern)s)"))
    if owner:
        conditions.append(sql.SQL("p.owners @> ARRAY[%(owner)s]::text[]"))
    if after is not None:
        conditions.append(sql.SQL("a.key > %(after)s"))
    where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
    query = sql.SQL(
        "SELECT a.key, p.name, p.owners, a.last_status, a.last_materialized_at FROM assets a "
        "LEFT JOIN asset_properties p ON p.key = a.key WHERE {} ORDER BY a.key LIMIT %(n)s"
    ).format(where)
    params: dict[str, Any] = {"pattern": like_pattern(search or ""), "owner": owner, "after": after, "n": limit + 1}
    rows = conn.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return AssetPage(
        assets=[AssetSummary(key=r[0], name=r[1], owners=r[2], last_status=r[3], last_materialized_at=r[4])
                for r in rows],
        search=search, owner=owner, limit=limit, next_after=rows[-1][0] if more else None,
    )


# --- history ---------------------------------------------------------------------------------------

def format_cursor(event_time: datetime, event_id: uuid.UUID) -> str:
    """A shell-safe cursor naming a materialization: `<event time, UTC>/<event id>`."""
    return f"{event_time.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}/{event_id}"


def parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """`<time>/<event id>` (from `next_cursor`) or just a time (materializations strictly before it)."""
    text, _, event_id = cursor.partition("/")
    try:
        return parse_time(text), uuid.UUID(event_id) if event_id else NIL_UUID
    except ValueError as exc:
        raise ValueError(f"not a history cursor ({exc}); pass the next_cursor of a previous page") from None


_HISTORY = """
SELECT h.event_id, h.event_time, h.status, h.payload ->> 'by',
       h.payload -> 'error' ->> 'type', h.payload -> 'error' ->> 'message',
       h.task_name, h.task_run_id, h.flow_name, h.flow_run_id,
       h.payload -> 'upstream_keys', h.payload -> 'properties', md.metadata
FROM lineage_history h
LEFT JOIN LATERAL (
    SELECT m.payload -> 'metadata' AS metadata FROM lineage_history m
     WHERE m.materialization_event_id = h.event_id AND m.event_type = 'metadata'
       AND m.event_time = h.event_time  -- a task run's events share its time; prunes to one partition
     ORDER BY m.event_time DESC, m.event_id DESC LIMIT 1
) md ON true
WHERE h.asset_key = %(key)s AND h.event_type = 'materialization' AND {before}
ORDER BY h.event_time DESC, h.event_id DESC
LIMIT %(n)s OFFSET %(offset)s
"""


def history_page(conn: psycopg.Connection, key: str, limit: int, before: str | None, offset: int) -> HistoryPage:
    """Materializations of `key`, newest first: `limit` of them, before the cursor or after `offset`."""
    params: dict[str, Any] = {"key": key, "n": limit + 1, "offset": offset}
    before_sql = sql.SQL("true")
    if before is not None:
        params["before_time"], params["before_id"] = parse_cursor(before)
        before_sql = sql.SQL("(h.event_time, h.event_id) < (%(before_time)s, %(before_id)s)")
    rows = conn.execute(sql.SQL(_HISTORY).format(before=before_sql), params).fetchall()  # type: ignore[arg-type]
    if not rows and before is None and offset == 0:
        require_asset(conn, key)
    more = len(rows) > limit
    rows = rows[:limit]
    entries = [
        HistoryEntry(
            run=MaterializationRun(event_id=r[0], event_time=r[1], status=r[2], by=r[3], error_type=r[4],
                                   error_message=r[5], task_name=r[6], task_run_id=r[7], flow_name=r[8],
                                   flow_run_id=r[9]),
            upstream_keys=r[10] or [], properties=r[11], metadata=r[12],
        )
        for r in rows
    ]
    last = entries[-1].run if entries and more else None
    return HistoryPage(key=key, entries=entries, limit=limit,
                       next_cursor=format_cursor(last.event_time, last.event_id) if last else None)
