"""Migration 0005's online step: `lineage_history` becomes partitioned without locking anyone out for long.

Converting a table of a billion rows in one transaction would lock readers and
writers out for as long as the copy takes. Instead, on a connection in
autocommit mode (the migrator holds its session advisory lock):

1. build: the partitioned table, with the live table's columns, checks,
   comments, indexes (same names), triggers, owner and grants, and the primary
   key (event_id, event_time), is created under the same name in the schema
   `BUILD_SCHEMA`, with the months the live rows need (and, unless the table is
   empty, the current and next month), and the DEFAULT partition; a statement trigger on the live table
   forwards every row written from now on. Creating that trigger waits for the
   writers in flight (SHARE ROW EXCLUSIVE); it asks with a short lock_timeout
   and retries, so writers never queue behind it for long. Readers never wait.
2. copy: the rows present before, in batches by event_id, each batch its own
   short transaction (ON CONFLICT DO NOTHING: a row forwarded meanwhile is not
   copied twice). Readers and writers go on.
3. swap: one short transaction (again lock_timeout and retries) drops the
   forwarding trigger and moves the live table to `RETIRED_SCHEMA` and the new
   one (with its partitions) into the live schema. Statements that waited
   resolve the name again and find the new table. 0005's SQL then drops the old
   table in the migration's transaction.

Interrupted anywhere before the swap, the next `assetlog db migrate` drops the
half-built schema and starts over; after it, the step finds the table
partitioned and does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
from psycopg import sql

from assetlog.errors import AssetlogError
from assetlog.projections.partitions import (
    HISTORY,
    add_months,
    create_default,
    create_month,
    is_partitioned,
    list_partitions,
    month_of,
    move_with_partitions,
    on_demand,
)
from assetlog.projections.shadow import _qualified_text, _retarget, live_schema

log = logging.getLogger("assetlog.migrate")

BUILD_SCHEMA = "assetlog_partitioning"
RETIRED_SCHEMA = "assetlog_unpartitioned"
COPY_BATCH = 20_000
LOCK_TIMEOUT_MS = 500  # per attempt of the two steps that take a conflicting lock
ATTEMPTS = 120
_FORWARD_FUNCTION = "forward_history"
_FORWARD_TRIGGER = "assetlog_forward_to_partitioned"

T = TypeVar("T")


class OnlineMigrationError(AssetlogError):
    """The online step could not finish; nothing the readers see has changed."""


def partition_history(conn: psycopg.Connection, *, copy_batch: int = COPY_BATCH,
                      on_progress: Callable[[int], None] | None = None) -> dict[str, object]:
    """Make the live `lineage_history` partitioned (see the module docstring); `conn` is in autocommit mode."""
    live = live_schema(conn)
    if is_partitioned(conn, live):
        return {"partitioned": "already"}
    started = time.monotonic()
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(BUILD_SCHEMA)))
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(RETIRED_SCHEMA)))
    _build(conn, live)
    _retrying(conn, "forward new rows", lambda: _forward(conn, live))
    copied = _copy(conn, live, copy_batch, on_progress)
    _retrying(conn, "swap", lambda: _swap(conn, live))
    return {"partitioned": "now", "copied_rows": copied, "seconds": round(time.monotonic() - started, 3)}


def _retrying(conn: psycopg.Connection, what: str, step: Callable[[], T]) -> T:
    """Run `step` in a transaction with a short lock_timeout, again until it gets its locks."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{LOCK_TIMEOUT_MS}ms",))
                return step()
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            log.info("partitioning lineage_history: %s: table busy (attempt %d), trying again", what, attempt)
            time.sleep(min(1.0, 0.05 * attempt))
    raise OnlineMigrationError(f"partitioning lineage_history: could not {what} in {ATTEMPTS} attempts (a long "
                               "transaction holds the table?); nothing changed for readers, run the migration again")


def _build(conn: psycopg.Connection, live: str) -> None:
    source, target = sql.Identifier(live, HISTORY), sql.Identifier(BUILD_SCHEMA, HISTORY)
    source_text = _qualified_text(conn, live, HISTORY)
    target_text = _qualified_text(conn, BUILD_SCHEMA, HISTORY)
    months = [row[0] for row in conn.execute(sql.SQL(
        "SELECT DISTINCT date_trunc('month', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM {}"
    ).format(source)).fetchall()]
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(BUILD_SCHEMA)))
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE "
                             "(event_time)").format(target, source))
        # PostgreSQL wants the partition key in every unique constraint.
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (event_id, event_time)").format(
            target, sql.Identifier(f"{HISTORY}_pkey")))
        for (definition,) in conn.execute(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s::regclass "
                "AND NOT i.indisprimary ORDER BY i.indexrelid", (source_text,)).fetchall():
            conn.execute(sql.SQL(_retarget(definition, source_text, target_text)))  # same name, other schema
        for (definition,) in conn.execute(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal "
                "ORDER BY tgname", (source_text,)).fetchall():
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
            create_month(conn, BUILD_SCHEMA, month)
        create_default(conn, BUILD_SCHEMA)
        conn.execute(sql.SQL(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO {target} SELECT * FROM assetlog_new_rows ON CONFLICT DO NOTHING; RETURN NULL; END $$"
        ).format(function=sql.Identifier(BUILD_SCHEMA, _FORWARD_FUNCTION), target=target))


def _forward(conn: psycopg.Connection, live: str) -> None:
    conn.execute(sql.SQL(
        "CREATE TRIGGER {} AFTER INSERT ON {} REFERENCING NEW TABLE AS assetlog_new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
    ).format(sql.Identifier(_FORWARD_TRIGGER), sql.Identifier(live, HISTORY),
             sql.Identifier(BUILD_SCHEMA, _FORWARD_FUNCTION)))


def _copy(conn: psycopg.Connection, live: str, batch: int, on_progress: Callable[[int], None] | None) -> int:
    """Copy the rows written before the forwarding trigger, `batch` at a time in event_id order."""
    statement = sql.SQL(
        "WITH batch AS (SELECT * FROM {source} WHERE event_id > %s ORDER BY event_id LIMIT %s), "
        "copied AS (INSERT INTO {target} SELECT * FROM batch ON CONFLICT DO NOTHING) "
        "SELECT (SELECT event_id FROM batch ORDER BY event_id DESC LIMIT 1), (SELECT count(*) FROM batch)"
    ).format(source=sql.Identifier(live, HISTORY), target=sql.Identifier(BUILD_SCHEMA, HISTORY))
    after, total = "00000000-0000-0000-0000-000000000000", 0
    while True:
        row = conn.execute(statement, (after, batch)).fetchone()
        if row is None or row[0] is None:
            return total
        after, total = row[0], total + int(row[1])
        if on_progress is not None:
            on_progress(total)


def _swap(conn: psycopg.Connection, live: str) -> None:
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(live, HISTORY)))
    conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(_FORWARD_TRIGGER),
                                                         sql.Identifier(live, HISTORY)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RETIRED_SCHEMA)))
    conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(sql.Identifier(live, HISTORY),
                                                                sql.Identifier(RETIRED_SCHEMA)))
    move_with_partitions(conn, BUILD_SCHEMA, HISTORY, live)
    if len(list_partitions(conn, live)) == 0:
        raise OnlineMigrationError("the partitioned lineage_history lost its partitions in the swap")
