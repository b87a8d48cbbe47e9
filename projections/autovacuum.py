"""Autovacuum kept off a replay's shadow tables while they load, and given back before they go live.

A replay COPYs a million rows into fresh tables, which is what wakes autovacuum (its insert
threshold); a worker then scans the tables being loaded, and later holds a lock that the swap's
`ALTER TABLE ... SET SCHEMA` (or the final DROP of a `--check`) must wait for: PostgreSQL cancels an
autovacuum only after a conflicting lock request has waited `deadlock_timeout`. Seen in 1M-event
replays on the local stack: swaps of 0.1 s in some runs, 2.6-5 s in others, the log naming an
autovacuum of `assetlog_shadow.lineage_history_<month>` cancelled by the swap (bench/README.md, P3).
The replay does the statistics work itself after the load (ANALYZE, and VACUUM where the visibility
map matters), so autovacuum has nothing to add before the swap.

So `pause` turns autovacuum off (`autovacuum_enabled` and `toast.autovacuum_enabled`) on every table
a shadow table stores rows in (the table, or each partition of a partitioned one), remembering the
values each had (mirrored from the live table: unset unless an operator set them), and `resume` puts
those values back, in the swap's own transaction, before the shadow and live definitions are compared.
A swap that fails rolls the resume back with it; the next attempt resumes again. Partitions created
after the pause (a month first met during the load) keep PostgreSQL's default. The swap also pauses
autovacuum on the tables it retires, which are dropped right after it.

The live tables are another matter: they stay vacuumed while they serve. When autovacuum alone holds
the tables the swap must lock (`holds_alone`), the swap waits past deadlock_timeout at once rather
than making its short tries first (consumers/replay.py): in 1M-event replays started right after the
live tables were loaded, those tries and their pauses added 1.5-2 s before the long wait that
cancels the autovacuum anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

from assetlog.projections.partitions import table_and_partitions

OPTIONS = ("autovacuum_enabled", "toast.autovacuum_enabled")
# (schema, table) -> each of OPTIONS's value before the pause (None: not set)
Paused = dict[tuple[str, str], dict[str, str | None]]


def pause(conn: psycopg.Connection, schema: str, tables: Iterable[str]) -> Paused:
    """Turn autovacuum off on the tables (and their partitions) in `schema`; returns what to restore."""
    paused: Paused = {}
    for table in tables:
        for leaf_schema, leaf, options in conn.execute(
                "SELECT n.nspname, c.relname, c.reloptions || coalesce((SELECT array_agg('toast.' || o) FROM pg_class x, "
                "unnest(x.reloptions) o WHERE x.oid = c.reltoastrelid), '{}') FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND c.oid = ANY(%s::oid[])",
                (table_and_partitions(conn, schema, table),)).fetchall():
            table_options = dict(o.partition("=")[::2] for o in options or ())
            paused[(leaf_schema, leaf)] = {name: table_options.get(name) for name in OPTIONS}
            conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
                                 ).format(sql.Identifier(leaf_schema, leaf)))
    return paused


def resume(conn: psycopg.Connection, paused: Paused) -> None:
    """Give each paused table its autovacuum setting back (still under its shadow name)."""
    for (schema, table), values in paused.items():
        target = sql.Identifier(schema, table)
        for name, value in values.items():
            option = sql.SQL(name)  # one of OPTIONS
            if value is None:
                conn.execute(sql.SQL("ALTER TABLE {} RESET ({})").format(target, option))
            else:
                conn.execute(sql.SQL("ALTER TABLE {} SET ({} = {})").format(target, option, sql.Literal(value)))


def holds_alone(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> bool:
    """Whether someone holds a lock on these (schema, table)s or their partitions, and every holder is
    an autovacuum worker: then only PostgreSQL's cancellation, after deadlock_timeout, can free them."""
    oids = [oid for schema, table in tables for oid in table_and_partitions(conn, schema, table)]
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE a.backend_type = 'autovacuum worker') FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'relation' AND l.granted "
        "AND l.pid <> pg_backend_pid() AND l.database = (SELECT oid FROM pg_database WHERE datname = "
        "current_database()) AND l.relation = ANY(%s::oid[])", (oids,)).fetchone()
    return bool(row and row[0] and row[0] == row[1])
