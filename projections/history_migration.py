"""Migration 0005's online step: `lineage_history` becomes partitioned without locking anyone out for long.

Converting a table of a billion rows in one transaction would lock readers and
writers out for as long as the copy takes. Instead, on a connection in
autocommit mode (the migrator holds its session advisory lock):

1. build: the partitioned table `BUILD_TABLE`, beside the live one in the
   same schema (a migrating user may create tables there, not necessarily
   schemas), with the live table's columns, checks, comments, indexes (under
   temporary names), triggers, owner and grants, and the primary key
   (event_id, event_time); its partitions get their final names: the months
   the live rows need (and, unless the table is empty, the current and next
   month) and DEFAULT; and `lineage_event_ids`, the registry that keeps
   event_id unique across partitions. A statement trigger on the live table
   forwards every row written from now on (to both). Creating that trigger waits for the writers in
   flight (SHARE ROW EXCLUSIVE); it asks with a short lock_timeout and
   retries, so writers never queue behind it for long. Readers never wait.
2. copy: the rows present before (and their ids to the registry), in batches
   by event_id, each batch its own
   short transaction (ON CONFLICT DO NOTHING: a row forwarded meanwhile is not
   copied twice). Readers and writers go on.
3. swap: one short transaction (again lock_timeout and retries) drops the
   forwarding trigger, renames the live table and its indexes out of the way
   (`RETIRED_TABLE`) and gives the new table and its indexes the live names
   (those of 0001 and 0002, which later migrations use). Statements that
   waited resolve the name again and find the new table. 0005's SQL then
   drops the old table in the migration's transaction.

Interrupted anywhere before the swap, the next `assetlog db migrate` drops the
half-built table and starts over; after it, the step finds the table
partitioned and does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from assetlog.projections.partitions import (
    HISTORY,
    add_months,
    create_default,
    create_month,
    is_partitioned,
    list_partitions,
    month_of,
    on_demand,
)
from assetlog.projections.shadow import _qualified_text, _retarget, live_schema
from assetlog.projections.short_locks import OnlineMigrationError, with_short_locks

log = logging.getLogger("assetlog.migrate")

BUILD_TABLE = "lineage_history_partitioning"
RETIRED_TABLE = "lineage_history_unpartitioned"
REGISTRY = "lineage_event_ids"  # event_id -> event_time, unique across partitions (see lineage.py)
COPY_BATCH = 20_000
_TASK = "partitioning lineage_history"
_FORWARD_FUNCTION = "assetlog_forward_history"
_FORWARD_TRIGGER = "assetlog_forward_to_partitioned"


def partition_history(conn: psycopg.Connection, *, copy_batch: int = COPY_BATCH,
                      on_progress: Callable[[int], None] | None = None) -> dict[str, object]:
    """Make the live `lineage_history` partitioned (see the module docstring); `conn` is in autocommit mode."""
    live = live_schema(conn)
    if is_partitioned(conn, live):
        return {"partitioned": "already"}
    started = time.monotonic()
    with conn.transaction():  # what an interrupted run left
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(sql.Identifier(live, _FORWARD_FUNCTION)))
        for name in (BUILD_TABLE, RETIRED_TABLE, REGISTRY):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(live, name)))
    names = _build(conn, live)
    with_short_locks(conn, _TASK, "forward new rows", lambda: _forward(conn, live))
    copied = _copy(conn, live, copy_batch, on_progress)
    with_short_locks(conn, _TASK, "swap", lambda: _swap(conn, live, names))
    return {"partitioned": "now", "copied_rows": copied, "seconds": round(time.monotonic() - started, 3)}


def _build(conn: psycopg.Connection, live: str) -> dict[str, str]:
    """Create the partitioned table; returns its index names, temporary -> final."""
    source, target = sql.Identifier(live, HISTORY), sql.Identifier(live, BUILD_TABLE)
    source_text = _qualified_text(conn, live, HISTORY)
    target_text = _qualified_text(conn, live, BUILD_TABLE)
    months = [row[0] for row in conn.execute(sql.SQL(
        "SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM {}"
    ).format(source)).fetchall()]
    names: dict[str, str] = {}

    def temporary(final: str) -> str:
        names[f"assetlog_partitioning_{len(names)}"] = final
        return f"assetlog_partitioning_{len(names) - 1}"

    with conn.transaction():
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE "
                             "(event_time)").format(target, source))
        # PostgreSQL wants the partition key in every unique constraint.
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (event_id, event_time)").format(
            target, sql.Identifier(temporary(f"{HISTORY}_pkey"))))
        for name, definition in conn.execute(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c "
                "ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass AND NOT i.indisprimary ORDER BY c.relname",
                (source_text,)).fetchall():
            prefix = f"CREATE {'UNIQUE ' if definition.startswith('CREATE UNIQUE') else ''}INDEX "
            printed = definition[len(prefix):].split(" ON ", 1)[0]
            renamed = prefix + temporary(name) + definition[len(prefix) + len(printed):]
            conn.execute(sql.SQL(_retarget(renamed, source_text, target_text)))
        for (definition,) in conn.execute(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal "
                "AND tgname <> %s ORDER BY tgname", (source_text, _FORWARD_TRIGGER)).fetchall():
            conn.execute(sql.SQL(_retarget(definition, source_text, target_text)))
        for grantee, privilege in conn.execute(
                "SELECT pg_get_userbyid(a.grantee), a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
                "WHERE c.oid = %s::regclass AND a.grantee NOT IN (0, c.relowner)", (source_text,)).fetchall():
            conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privilege), target, sql.Identifier(grantee)))
        wanted = {month_of(m) for m in months if on_demand(month_of(m))}
        if months:  # a live deployment: rows forwarded during the copy must find their month, not DEFAULT
            current = month_of(datetime.now(UTC))
            wanted |= {current, add_months(current, 1)}
        for month in sorted(wanted):
            create_month(conn, live, month, of=BUILD_TABLE)
        create_default(conn, live, of=BUILD_TABLE)
        # The id registry, filled alongside (its comments and grants are in 0005's file).
        conn.execute(sql.SQL("CREATE TABLE {} (event_id uuid PRIMARY KEY, event_time timestamptz NOT NULL)").format(
            sql.Identifier(live, REGISTRY)))
        conn.execute(sql.SQL(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO {target} SELECT * FROM assetlog_new_rows ON CONFLICT DO NOTHING; "
            "INSERT INTO {registry} SELECT event_id, event_time FROM assetlog_new_rows ON CONFLICT DO NOTHING; "
            "RETURN NULL; END $$"
        ).format(function=sql.Identifier(live, _FORWARD_FUNCTION), target=target,
                 registry=sql.Identifier(live, REGISTRY)))
    return names


def _forward(conn: psycopg.Connection, live: str) -> None:
    conn.execute(sql.SQL(
        "CREATE TRIGGER {} AFTER INSERT ON {} REFERENCING NEW TABLE AS assetlog_new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
    ).format(sql.Identifier(_FORWARD_TRIGGER), sql.Identifier(live, HISTORY),
             sql.Identifier(live, _FORWARD_FUNCTION)))


def _copy(conn: psycopg.Connection, live: str, batch: int, on_progress: Callable[[int], None] | None) -> int:
    """Copy the rows written before the forwarding trigger, `batch` at a time in event_id order."""
    statement = sql.SQL(
        "WITH batch AS (SELECT * FROM {source} WHERE event_id > %s ORDER BY event_id LIMIT %s), "
        "copied AS (INSERT INTO {target} SELECT * FROM batch ON CONFLICT DO NOTHING), "
        "registered AS (INSERT INTO {registry} SELECT event_id, event_time FROM batch ON CONFLICT DO NOTHING) "
        "SELECT (SELECT event_id FROM batch ORDER BY event_id DESC LIMIT 1), (SELECT count(*) FROM batch)"
    ).format(source=sql.Identifier(live, HISTORY), target=sql.Identifier(live, BUILD_TABLE),
             registry=sql.Identifier(live, REGISTRY))
    after, total = "00000000-0000-0000-0000-000000000000", 0
    while True:
        row = conn.execute(statement, (after, batch)).fetchone()
        if row is None or row[0] is None:
            return total
        after, total = row[0], total + int(row[1])
        if on_progress is not None:
            on_progress(total)


def _swap(conn: psycopg.Connection, live: str, names: dict[str, str]) -> None:
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(live, HISTORY)))
    conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(_FORWARD_TRIGGER),
                                                         sql.Identifier(live, HISTORY)))
    for (index, oid) in conn.execute("SELECT indexrelid::regclass::text, indexrelid FROM pg_index WHERE indrelid = "
                                     "%s::regclass", (_qualified_text(conn, live, HISTORY),)).fetchall():
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.SQL(index),  # regclass text: quoted
                                                                   sql.Identifier(f"assetlog_unpartitioned_{oid}")))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(live, HISTORY),
                                                               sql.Identifier(RETIRED_TABLE)))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(live, BUILD_TABLE),
                                                               sql.Identifier(HISTORY)))
    for temporary, final in names.items():
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(live, temporary),
                                                                   sql.Identifier(final)))
    if not list_partitions(conn, live):
        raise OnlineMigrationError("the partitioned lineage_history has no partitions at the swap")
