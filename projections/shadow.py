"""Shadow copies of projection tables, and the swap that puts them in place of the live ones.

A replay rebuilds a projection into tables of the same names in a separate
schema (`assetlog_shadow`) while the live tables keep serving reads. The
shadow tables mirror (a partitioned table with its partitions) the live ones as PostgreSQL describes them now (columns,
defaults, constraints, indexes, triggers, comments, owner and grants, e.g. the
read-only `assetlog_reader` role's SELECT), so that once swapped in nothing
tells them apart from tables `assetlog db migrate` created; `definition()`
describes a table and the swap refuses to go on if shadow and live differ.

Indexes not needed by the projections' upserts are created after the bulk
load (`create_deferred_indexes`): building an index once is several times
cheaper than maintaining it row by row. The swap is a pair of
`ALTER TABLE ... SET SCHEMA` per table in the caller's transaction: O(1) in
the size of the tables, atomic for readers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from assetlog.errors import AssetlogError
from assetlog.projections import autovacuum
from assetlog.projections.build_plan import BuildPlan, Step
from assetlog.projections.partitions import (
    add_missing_months,
    is_partitioned,
    mirror_partitions,
    move_with_partitions,
    table_and_partitions,
)

SHADOW_SCHEMA = "assetlog_shadow"
RETIRED_SCHEMA = "assetlog_retired"
# Where a replay keeps its own offsets and dead letters until the swap copies them.
BOOKKEEPING_TABLES = ("consumer_offsets", "dead_letters")

_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}


class ShadowError(AssetlogError):
    """The live tables cannot be mirrored or swapped safely; the message says why and what to do."""


def live_schema(conn: psycopg.Connection) -> str:
    """The schema the projection tables live in: the first of the connection's search_path."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise ShadowError("the connection's search_path names no existing schema; set one (normally public)")
    return str(row[0])


def _qualified_text(conn: psycopg.Connection, schema: str, name: str) -> str:
    """`schema.name` as PostgreSQL prints it in index and trigger definitions (quoted only if needed)."""
    row = conn.execute("SELECT quote_ident(%s) || '.' || quote_ident(%s)", (schema, name)).fetchone()
    assert row is not None
    return str(row[0])


def _retarget(definition: str, source: str, target: str) -> str:
    """Point a CREATE INDEX / CREATE TRIGGER text printed by PostgreSQL at another table."""
    # A partitioned table's index reads "ON ONLY t": the mirror is built without ONLY, so that the
    # index covers the partitions too.
    definition = definition.replace(f" ON ONLY {source} ", f" ON {source} ", 1)
    marker = f" ON {source} "
    if definition.count(marker) != 1:
        raise ShadowError(f"cannot mirror {definition[:200]!r}: it does not name {source} exactly once")
    return definition.replace(marker, f" ON {target} ")


def _oid(conn: psycopg.Connection, schema: str, name: str) -> int:
    row = conn.execute("SELECT to_regclass(%s)::oid", (_qualified_text(conn, schema, name),)).fetchone()
    if row is None or row[0] is None:
        raise ShadowError(f"table {schema}.{name} does not exist: run `assetlog db migrate` first")
    return int(row[0])


@dataclass
class ShadowTables:
    """The shadow schema of one replay: mirrors of `tables`, plus bookkeeping tables of its own."""

    live: str
    tables: Sequence[str]
    schema: str = SHADOW_SCHEMA
    # Tables whose primary key is built after the load too (their rows are only COPYed, or derived from
    # other tables once loaded: never upserted while loading).
    keys_after_load: Sequence[str] = ()
    # What is built after the load: (table, is a primary key, statement, the comments that go with it)
    deferred: list[tuple[str, bool, sql.Composable, list[sql.Composable]]] = field(default_factory=list)
    # Autovacuum settings to give back before the swap (`autovacuum.pause`: off while the tables load)
    paused: autovacuum.Paused = field(default_factory=dict)

    def create(self, conn: psycopg.Connection, defer_indexes: bool = True) -> None:
        """Drop any leftover shadow schema and mirror the live tables into a fresh one (one transaction)."""
        with conn.transaction():
            self.drop(conn)
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            for name in self.tables:
                self._mirror(conn, name, defer_indexes)
            for name in BOOKKEEPING_TABLES:
                conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(self.schema, name), sql.Identifier(self.live, name)))
            self.paused = autovacuum.pause(conn, self.schema, self.tables)

    def resume_autovacuum(self, conn: psycopg.Connection) -> None:
        """Give the shadow tables the autovacuum settings `create` paused (in the swap's transaction)."""
        autovacuum.resume(conn, self.paused)

    def drop(self, conn: psycopg.Connection) -> None:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def _mirror(self, conn: psycopg.Connection, name: str, defer_indexes: bool) -> None:
        live, shadow = sql.Identifier(self.live, name), sql.Identifier(self.schema, name)
        oid = _oid(conn, self.live, name)
        source, target = _qualified_text(conn, self.live, name), _qualified_text(conn, self.schema, name)
        info = conn.execute(
            "SELECT pg_get_userbyid(relowner), obj_description(oid, 'pg_class'), reloptions, relrowsecurity, "
            "current_user, pg_get_partkeydef(oid) FROM pg_class WHERE oid = %s", (oid,)).fetchone()
        assert info is not None
        owner, comment, reloptions, row_security, me, partition_key = info
        if row_security:
            raise ShadowError(f"{self.live}.{name} has row-level security, which a replay does not mirror")
        foreign = conn.execute("SELECT conname FROM pg_constraint WHERE contype = 'f' AND (conrelid = %s "
                               "OR confrelid = %s)", (oid, oid)).fetchall()
        if foreign:
            raise ShadowError(f"{self.live}.{name} takes part in foreign keys ({', '.join(r[0] for r in foreign)}), "
                              "which a replay cannot swap; drop them first")
        # Columns, defaults, NOT NULL, CHECK constraints (with their names) and column comments.
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES){}").format(
            shadow, live, sql.SQL(" PARTITION BY ") + sql.SQL(partition_key) if partition_key else sql.SQL("")))
        if owner != me:
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(shadow, sql.Identifier(owner)))
        if comment is not None:
            conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(shadow, sql.Literal(comment)))
        for option in reloptions or ():
            key, _, value = option.partition("=")
            conn.execute(sql.SQL("ALTER TABLE {} SET ({} = {})").format(
                shadow, sql.Identifier(key), sql.Literal(value)))
        self._mirror_constraint_indexes(conn, name, oid, shadow, defer_key=defer_indexes and name in self.keys_after_load)
        for index_name, definition, index_comment in conn.execute(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid), obj_description(i.indexrelid, 'pg_class') "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s AND NOT EXISTS "
                "(SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid) "
                "ORDER BY c.relname", (oid,)).fetchall():
            statement = sql.SQL(_retarget(definition, source, target))  # PostgreSQL's own text, retargeted
            comments = self._index_comment(index_name, index_comment)
            if defer_indexes:
                self.deferred.append((name, False, statement, comments))
            else:
                self._build(conn, statement, comments)
        for trigger, definition, trigger_comment in conn.execute(
                "SELECT tgname, pg_get_triggerdef(oid), obj_description(oid, 'pg_trigger') FROM pg_trigger "
                "WHERE tgrelid = %s AND NOT tgisinternal ORDER BY tgname", (oid,)).fetchall():
            conn.execute(sql.SQL(_retarget(definition, source, target)))  # PostgreSQL's own text, retargeted
            if trigger_comment is not None:
                conn.execute(sql.SQL("COMMENT ON TRIGGER {} ON {} IS {}").format(
                    sql.Identifier(trigger), shadow, sql.Literal(trigger_comment)))
        if partition_key:  # the same partitions (the rows of months created later go to new ones alike)
            mirror_partitions(conn, self.live, self.schema, name)
        for grantee, privilege, grantable in conn.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
                "a.is_grantable FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s AND a.grantee <> c.relowner",
                (oid,)).fetchall():
            if privilege not in _PRIVILEGES:
                raise ShadowError(f"unknown privilege {privilege!r} on {self.live}.{name}")
            conn.execute(sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege), shadow, sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")))

    def _mirror_constraint_indexes(self, conn: psycopg.Connection, table_name: str, oid: int, shadow: sql.Identifier,
                                   defer_key: bool = False) -> None:
        """Primary keys and unique/exclusion constraints (the upserts' conflict targets) at once; with
        `defer_key`, the primary key after the load (see `keys_after_load`)."""
        for name, kind, definition, comment, index_comment in conn.execute(
                "SELECT conname, contype, pg_get_constraintdef(oid), obj_description(oid, 'pg_constraint'), "
                "obj_description(conindid, 'pg_class') FROM pg_constraint "
                "WHERE conrelid = %s AND contype IN ('p', 'u', 'x') ORDER BY conname", (oid,)).fetchall():
            statement = (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(shadow, sql.Identifier(name))
                         + sql.SQL(definition))  # PostgreSQL's own text: PRIMARY KEY (key), ...
            comments = self._index_comment(name, index_comment)
            if comment is not None:
                comments.insert(0, sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                    sql.Identifier(name), shadow, sql.Literal(comment)))
            if defer_key and kind == "p":
                self.deferred.append((table_name, True, statement, comments))
            else:
                self._build(conn, statement, comments)

    def _index_comment(self, name: str, comment: str | None) -> list[sql.Composable]:
        return [] if comment is None else [sql.SQL("COMMENT ON INDEX {} IS {}").format(
            sql.Identifier(self.schema, name), sql.Literal(comment))]

    @staticmethod
    def _build(conn: psycopg.Connection, statement: sql.Composable, comments: list[sql.Composable]) -> None:
        conn.execute(statement)
        for comment in comments:
            conn.execute(comment)

    def create_deferred_indexes(self, dsn: str, parallel: int = 1, work_mem: str = "128MB",
                                analyze: bool = False, loads: Sequence[Step] = ()) -> None:
        """Build the indexes left out during the bulk load, each once, from the loaded rows; with
        `analyze`, also vacuum each table and gather its planner statistics (`VACUUM (ANALYZE)`) in the
        same pool, before it goes live (see `_STATISTICS`).
        `loads` (kind "load", `work` called with a connection) fill tables made from the loaded ones
        first, beside the other tables' builds (`build_plan`).

        With `parallel` > 1 the work runs on that many connections at once, each step as soon as
        nothing it would wait for on its table is running or still to come (`build_plan.BuildPlan`:
        the deferred primary keys first, a table's statistics after its builds, the biggest tables
        first). Statistics gathered after all the builds instead added a third to this phase, and
        statistics waiting behind a build on another connection left a core idle (bench/README.md, P3).
        """

        with psycopg.connect(dsn, autocommit=True) as conn:
            sizes = {name: _size(conn, self.schema, name) for name in self.tables}
        steps = [*loads, *(Step(table, "key" if key else "index", (statement, comments))
                           for table, key, statement, comments in self.deferred)]
        if analyze:
            steps += [Step(name, "statistics", _STATISTICS.format(sql.Identifier(self.schema, name)))
                      for name in self.tables]
        plan = BuildPlan(steps, sizes)
        turn = threading.Condition()
        failed: list[BaseException] = []

        def next_step() -> Step | None:
            with turn:
                while not failed and not plan.done:
                    step = plan.take()
                    if step is not None:
                        return step
                    turn.wait()
                return None

        def work() -> None:
            with psycopg.connect(dsn, application_name="assetlog.replay.indexes", autocommit=True) as conn:
                conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (work_mem,))
                while (step := next_step()) is not None:
                    try:
                        if step.kind == "statistics":
                            conn.execute(step.work)  # type: ignore[arg-type]
                        elif step.kind == "load":
                            step.work(conn)  # type: ignore[operator]
                        else:
                            build_naming_partitions(conn, *step.work)  # type: ignore[misc]
                    except BaseException as exc:
                        with turn:
                            failed.append(exc)
                        raise
                    finally:
                        with turn:
                            plan.finish(step)
                            turn.notify_all()

        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="assetlog-index") as pool:
            for future in [pool.submit(work) for _ in range(max(1, min(parallel, len(steps))))]:
                future.result()
        self.deferred.clear()

    def mismatches(self, conn: psycopg.Connection) -> list[str]:
        """Tables whose shadow definition differs from the live one (e.g. a migration ran meanwhile)."""
        return [name for name in self.tables
                if definition(conn, self.live, name) != definition(conn, self.schema, name)]

    def swap(self, conn: psycopg.Connection, retired: str = RETIRED_SCHEMA) -> None:
        """Put the shadow tables in place of the live ones (caller's transaction, tables locked by it,
        `resume_autovacuum` called in it before, so the tables go live with their own settings).

        The live tables move to `retired` (dropped by `drop_retired` after the commit): readers
        blocked meanwhile resolve the names again once the transaction commits, and find the new
        tables.
        """
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(retired)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(retired)))
        for name in self.tables:
            if is_partitioned(conn, self.live, name):  # months the live writers created during the replay
                add_missing_months(conn, self.live, self.schema, name)
            move_with_partitions(conn, self.live, name, retired)
            move_with_partitions(conn, self.schema, name, self.live)
        # No autovacuum may start on the retired tables before the caller drops them (it would hold the
        # DROP for a deadlock_timeout); this transaction holds them, so the change waits for nobody.
        autovacuum.pause(conn, retired, self.tables)


# Every loaded table is vacuumed, not only analyzed, before it goes live:
# - "now" walks read asset_edges by index-only scans, which visit the heap for every row until the
#   visibility map says its pages are all-visible; only VACUUM sets it, and autovacuum would come minutes
#   after the swap;
# - a million loaded rows wake autovacuum on every table once it is live (inserts, and the properties
#   upserts' dead rows), and the next replay's swap then waited deadlock_timeout (1 s) for PostgreSQL to
#   cancel each of those vacuums: swaps of 1.1-2.2 s instead of 0.1. Vacuumed after the load, per 1M
#   events: the history 0.26 s, the id registry 0.05, assets 0.26, asset_properties 0.09 (bench/README.md,
#   issue 15, eleventh pass): work autovacuum would have done anyway.
_STATISTICS = sql.SQL("VACUUM (ANALYZE) {}")


def _size(conn: psycopg.Connection, schema: str, name: str) -> int:
    """Bytes of a table's heap, its partitions' included."""
    row = conn.execute("SELECT coalesce(sum(pg_relation_size(oid)), 0) FROM unnest(%s::oid[]) AS oid",
                       (table_and_partitions(conn, schema, name),)).fetchone()
    return int(row[0]) if row else 0


# PostgreSQL's unique index on relation names: what two index builds hit when they chose the same name.
_RELATION_NAME_KEY = "pg_class_relname_nsp_index"


def build_naming_partitions(conn: psycopg.Connection, statement: sql.Composable, comments: list[sql.Composable],
                            attempts: int = 5) -> None:
    """Run one index build (with its comments) in its own transaction, again if its name for a partition's
    index was taken meanwhile.

    An index on a partitioned table gives each partition an index named after the partition and the
    columns (`lineage_history_2026_12_asset_key_event_time_event_id_idx`), choosing a free name as it
    goes. Two builds over the same columns (the history has two, one partial) on two connections
    that choose at the same moment can both find the name free (seen once in a suite run); the
    second one's insert into the catalog then fails on the first's. The first's name is visible by
    then, so the same statement run again picks the next free one. Any other error, or the same one
    `attempts` times, is raised.
    """
    for attempt in range(1, attempts + 1):
        try:
            with conn.transaction():
                ShadowTables._build(conn, statement, comments)
            return
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != _RELATION_NAME_KEY or attempt == attempts:
                raise


def drop_retired(conn: psycopg.Connection, retired: str = RETIRED_SCHEMA) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(retired)))


def dependents(conn: psycopg.Connection, schema: str, tables: Iterable[str]) -> list[str]:
    """Views (and materialized views) reading these tables, and foreign keys pointing at them: a swap
    would leave them attached to the retired tables, and dropping those would drop them too."""
    found: list[str] = []
    for name in tables:
        oid = _oid(conn, schema, name)
        found += [str(row[0]) for row in conn.execute(
            "SELECT DISTINCT r.ev_class::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
            "WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s AND r.ev_class <> %s", (oid, oid))]
        found += [str(row[0]) for row in conn.execute(
            "SELECT conname || ' on ' || conrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = %s AND conrelid <> %s", (oid, oid))]
    return sorted(set(found))


def definition(conn: psycopg.Connection, schema: str, name: str) -> dict[str, Any]:
    """Everything that makes a table what it is, independent of the schema it sits in.

    Two tables with equal definitions are interchangeable for readers and for
    the projections: same columns (types, defaults, NOT NULL), constraints,
    indexes, triggers, comments, owner, grants and storage options.
    """
    oid = _oid(conn, schema, name)
    qualified = _qualified_text(conn, schema, name)

    def local(text: str) -> str:
        return text.replace(f" ON ONLY {qualified} ", f" ON ONLY {name} ").replace(f" ON {qualified} ", f" ON {name} ")

    table = conn.execute(
        "SELECT pg_get_userbyid(relowner), obj_description(oid, 'pg_class'), reloptions, relpersistence, "
        "relrowsecurity, relkind, pg_get_partkeydef(oid) FROM pg_class WHERE oid = %s", (oid,)).fetchone()
    columns = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), "
        "a.attidentity, a.attgenerated, col_description(a.attrelid, a.attnum), co.collname "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (oid,)).fetchall()
    constraints = conn.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid), obj_description(oid, 'pg_constraint') "
        "FROM pg_constraint WHERE conrelid = %s ORDER BY conname", (oid,)).fetchall()
    indexes = [(n, local(d), c) for n, d, c in conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), obj_description(i.indexrelid, 'pg_class') "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s ORDER BY c.relname",
        (oid,)).fetchall()]
    triggers = [(n, local(d), e, c) for n, d, e, c in conn.execute(
        "SELECT tgname, pg_get_triggerdef(oid), tgenabled, obj_description(oid, 'pg_trigger') FROM pg_trigger "
        "WHERE tgrelid = %s AND NOT tgisinternal ORDER BY tgname", (oid,)).fetchall()]
    grants = conn.execute(
        "SELECT coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), 'PUBLIC'), a.privilege_type, a.is_grantable "
        "FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a WHERE c.oid = %s "
        "ORDER BY 1, 2", (oid,)).fetchall()
    return {"table": table, "columns": columns, "constraints": constraints, "indexes": indexes,
            "triggers": triggers, "grants": grants}
