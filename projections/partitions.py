"""Monthly partitions of `lineage_history`: naming, creating ahead or on demand, listing, detaching.

The history is partitioned by RANGE (event_time), one partition per calendar
month in UTC, plus a DEFAULT partition. The rule for where an event goes, so
that none is ever lost and no consumer ever stops on a missing partition:

- a month between `FIRST_MONTH` and `AHEAD` months after the current one gets
  its partition created on demand, by the writer, before the rows are written,
  and in the last `AHEAD_DAYS` days of a month the writers create the next
  month ahead (so the month's first events do not wait for a table lock);
- any other time (a clock far off, year 1970 or 2999) lands in the DEFAULT
  partition, which is append-only like every other one. A writer never creates
  a partition over rows already in the DEFAULT partition (PostgreSQL refuses
  it, and moving them takes the table's lock): such a month keeps its rows in
  DEFAULT, and `partitions list` shows them, until an operator creates that
  month with `assetlog db partitions create`, which moves them (`move_out_of_default`).

Every partition refuses UPDATE and DELETE through the parent's row triggers
(PostgreSQL clones them to every partition, also to those created later), and
TRUNCATE through a statement trigger of its own, added here when the partition
is created: statement triggers are not inherited. Detaching is explicit
(`assetlog db partitions detach --before`): the topics stay the source of
truth, a detached month is an ordinary table in `ARCHIVE_SCHEMA` to dump and drop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from assetlog.errors import AssetlogError
from assetlog.projections.base import table

log = logging.getLogger("assetlog.projections")

HISTORY = "lineage_history"
DEFAULT_SUFFIX = "default"
ARCHIVE_SCHEMA = "assetlog_archive"
# Months created on demand: from here to AHEAD months after the current one. Outside: DEFAULT.
FIRST_MONTH = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD = 12
AHEAD_DAYS = 7
# A writer creating a partition waits at most this long for the table lock, then writes to DEFAULT
# for now (the next batch tries again) rather than queueing every reader behind it.
CREATE_LOCK_TIMEOUT = "500ms"


class PartitionError(AssetlogError):
    """A partition cannot be created, listed or detached; the message says why."""


def month_of(moment: datetime) -> datetime:
    """The first instant (UTC) of the calendar month holding `moment`."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def months_of(times: Iterable[datetime]) -> set[datetime]:
    """`month_of` of each time, as a set: one call per batch of rows (the writers' hot path), which
    skips the conversion for times already in UTC (decoded ones are)."""
    months: set[tuple[int, int]] = set()
    for moment in times:
        if moment.tzinfo is not UTC:
            moment = moment.astimezone(UTC)
        months.add((moment.year, moment.month))
    return {datetime(year, month, 1, tzinfo=UTC) for year, month in months}


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime, parent: str = HISTORY) -> str:
    return f"{parent}_{month.year:04d}_{month.month:02d}"


def on_demand(month: datetime, now: datetime | None = None) -> bool:
    """Whether a writer creates this month's partition when it meets an event of it (else: DEFAULT)."""
    return FIRST_MONTH <= month <= add_months(month_of(now or datetime.now(UTC)), AHEAD)


def ahead(now: datetime | None = None) -> list[datetime]:
    """The month the writers create ahead: the next one, in the last `AHEAD_DAYS` days of this one."""
    moment = now or datetime.now(UTC)
    following = add_months(month_of(moment), 1)
    return [following] if following - moment <= timedelta(days=AHEAD_DAYS) else []


@dataclass(frozen=True)
class Partition:
    """One partition: a month [lower, upper), or the DEFAULT partition (no bounds)."""

    schema: str
    name: str
    lower: datetime | None
    upper: datetime | None
    estimated_rows: int
    bytes: int
    refuses_truncate: bool

    @property
    def is_default(self) -> bool:
        return self.lower is None

    def as_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "default": self.is_default,
                "from": self.lower.isoformat() if self.lower else None,
                "to": self.upper.isoformat() if self.upper else None,
                "estimated_rows": self.estimated_rows, "bytes": self.bytes,
                "refuses_truncate": self.refuses_truncate}


def is_partitioned(conn: psycopg.Connection, schema: str | None, parent: str = HISTORY) -> bool:
    row = conn.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)",
                       (_regclass_text(schema, parent),)).fetchone()
    return bool(row and row[0])


def table_and_partitions(conn: psycopg.Connection, schema: str, name: str) -> list[int]:
    """The oids of a table and of every partition under it (pg_partition_tree alone has no row for a
    table that is not partitioned)."""
    return [row[0] for row in conn.execute(
        "SELECT %(t)s::regclass::oid UNION SELECT relid::oid FROM pg_partition_tree(%(t)s::regclass)",
        {"t": _regclass_text(schema, name)}).fetchall()]


def _regclass_text(schema: str | None, name: str) -> str:
    quoted = '"' + name.replace('"', '""') + '"'
    return quoted if schema is None else '"' + schema.replace('"', '""') + '".' + quoted


def list_partitions(conn: psycopg.Connection, schema: str | None, parent: str = HISTORY) -> list[Partition]:
    """The partitions of `parent`, months in order, DEFAULT last."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, b[1]::timestamptz, b[2]::timestamptz, greatest(c.reltuples, 0)::bigint, "
        "pg_total_relation_size(c.oid), EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid "
        "AND NOT t.tgisinternal AND t.tgtype & 32 <> 0 AND t.tgfoid = 'assetlog_refuse_change'::regproc) "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), "
        "$$FROM \\('([^']*)'\\) TO \\('([^']*)'\\)$$) AS b "
        "WHERE i.inhparent = to_regclass(%s) ORDER BY b[1]::timestamptz NULLS LAST, c.relname",
        (_regclass_text(schema, parent),)).fetchall()
    return [Partition(schema_, name, _utc(lower), _utc(upper), rows_, size, protected)
            for schema_, name, lower, upper, rows_, size, protected in rows]


def _utc(moment: datetime | None) -> datetime | None:
    """Bounds in UTC, whatever the session's TimeZone (months are UTC months)."""
    return moment.astimezone(UTC) if moment is not None else None


def _protect(conn: psycopg.Connection, qualified: sql.Composable) -> None:
    """TRUNCATE refused on this partition (row triggers come from the parent; statement ones do not)."""
    conn.execute(sql.SQL("CREATE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT "
                         "EXECUTE FUNCTION assetlog_refuse_change()").format(
        sql.Identifier(f"{HISTORY}_no_truncate"), qualified))


def create_default(conn: psycopg.Connection, schema: str | None, parent: str = HISTORY, *,
                   of: str | None = None) -> None:
    """The DEFAULT partition of `parent` (or of the table `of`, named as `parent`'s; caller's transaction)."""
    name = table(schema, f"{parent}_{DEFAULT_SUFFIX}")
    conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(name, table(schema, of or parent)))
    _protect(conn, name)


def create_month(conn: psycopg.Connection, schema: str | None, month: datetime, parent: str = HISTORY, *,
                 of: str | None = None) -> None:
    """The partition of `month` (caller's transaction; raises if it overlaps one, or rows in DEFAULT).

    `of`: attach it to that table instead, still named as `parent`'s (a table built to replace it)."""
    name = table(schema, partition_name(month, parent))
    conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
        name, table(schema, of or parent), sql.Literal(month.isoformat()),
        sql.Literal(add_months(month, 1).isoformat())))
    _protect(conn, name)


def mirror_partitions(conn: psycopg.Connection, source_schema: str, target_schema: str,
                      parent: str = HISTORY) -> None:
    """Give `target_schema.parent` (partitioned, empty) the partitions `source_schema.parent` has."""
    for partition in list_partitions(conn, source_schema, parent):
        if partition.is_default:
            create_default(conn, target_schema, parent)
        elif partition.lower is not None and partition.upper == add_months(partition.lower, 1):
            create_month(conn, target_schema, partition.lower, parent)
        else:
            raise PartitionError(f"{source_schema}.{partition.name} is not one calendar month "
                                 f"({partition.lower} to {partition.upper}); a replay mirrors only monthly partitions")


def add_missing_months(conn: psycopg.Connection, source_schema: str, target_schema: str,
                       parent: str = HISTORY) -> None:
    """Give `target_schema.parent` the months `source_schema.parent` has and it lacks (each in a savepoint:
    a month whose rows went to the target's DEFAULT partition stays there)."""
    have = {p.lower for p in list_partitions(conn, target_schema, parent)}
    for partition in list_partitions(conn, source_schema, parent):
        if partition.lower is None or partition.lower in have or partition.upper != add_months(partition.lower, 1):
            continue
        try:
            with conn.transaction():
                create_month(conn, target_schema, partition.lower, parent)
        except psycopg.errors.CheckViolation:
            log.warning("%s.%s not mirrored: the default partition holds rows of that month", target_schema,
                        partition.name)


class MonthlyPartitions:
    """The months a writer knows exist, so that a batch of known months costs no query at all.

    `ensure(conn, times)` is called in the writer's transaction before its rows
    are written: a month not seen before is looked up in the catalog (another
    process may have created it) and created when missing and on demand. A
    creation that fails (lock timeout, rows of that month in DEFAULT) is undone
    by its savepoint and the rows go to DEFAULT; it is tried again later.
    """

    def __init__(self, schema: str | None, parent: str = HISTORY) -> None:
        self.schema = schema
        self.parent = parent
        self.known: set[datetime] = set()
        self.partitioned: bool | None = None  # None: not looked up yet

    def forget(self) -> None:
        """Look the catalog up again next time (after a replay swapped the tables, say)."""
        self.known.clear()
        self.partitioned = None

    def ensure(self, conn: psycopg.Connection, times: Iterable[datetime],
               now: datetime | None = None) -> list[datetime]:
        """Create the missing partitions for `times` (and the next month in the last days of this one);
        returns those created."""
        wanted = months_of(times) | set(ahead(now))
        missing = {m for m in wanted if m not in self.known and on_demand(m, now)}
        if not missing:
            return []
        self._load(conn)
        created: list[datetime] = []
        if not self.partitioned:
            self.partitioned = None  # not migrated yet (an online migration is running): look again next time
            return created
        for month in sorted(missing - self.known):
            if self._try_create(conn, month):
                created.append(month)
                self.known.add(month)
        return created

    def _load(self, conn: psycopg.Connection) -> None:
        self.partitioned = is_partitioned(conn, self.schema, self.parent)
        if self.partitioned:
            self.known = {p.lower for p in list_partitions(conn, self.schema, self.parent)
                          if p.lower is not None and p.upper == add_months(p.lower, 1)}

    def _try_create(self, conn: psycopg.Connection, month: datetime) -> bool:
        previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (CREATE_LOCK_TIMEOUT,))
                create_month(conn, self.schema, month, self.parent)
            return True
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            # Created meanwhile by another writer (the other replay worker, a live consumer beside it): the
            # name is taken only once that writer committed, so the partition is there and takes the rows.
            log.debug("partition %s created meanwhile by another writer", partition_name(month, self.parent))
            self.known.add(month)
            return False
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.CheckViolation,
                psycopg.errors.InvalidObjectDefinition) as exc:
            # Busy table, or rows of the month already in DEFAULT: the rows of this batch go where
            # PostgreSQL routes them; the next batch looks again.
            log.warning("partition %s not created now (%s); its rows go to the default partition",
                        partition_name(month, self.parent), str(exc).splitlines()[0])
            return False
        finally:
            if previous is not None and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous[0],))


def create_range(conn: psycopg.Connection, schema: str | None, first: datetime, last: datetime,
                 parent: str = HISTORY) -> dict[str, int]:
    """Create every missing month from `first` to `last` inclusive (each in its own transaction).

    Returns each created partition's name with the number of rows it took over
    from the DEFAULT partition (0 for most): a month whose events arrived while
    it had no partition gets them moved into it (`move_out_of_default`).
    """
    if not is_partitioned(conn, schema, parent):
        raise PartitionError(f"{parent} is not partitioned: run `assetlog db migrate` first")
    existing = {p.lower for p in list_partitions(conn, schema, parent)}
    created: dict[str, int] = {}
    month = month_of(first)
    while month <= month_of(last):
        if month not in existing:
            name = partition_name(month, parent)
            try:
                with conn.transaction():
                    conn.execute("SELECT set_config('lock_timeout', '5s', true)")
                    create_month(conn, schema, month, parent)
                created[name] = 0
            except psycopg.errors.CheckViolation:
                created[name] = move_out_of_default(conn, schema, month, parent)
            except psycopg.errors.LockNotAvailable:
                raise PartitionError(f"cannot create {name}: {parent} stayed locked for 5 s (a long query?); "
                                     "try again") from None
        month = add_months(month, 1)
    return created


def move_out_of_default(conn: psycopg.Connection, schema: str | None, month: datetime,
                        parent: str = HISTORY) -> int:
    """Create `month`'s partition over rows the DEFAULT partition holds for it, moving them; returns how many.

    PostgreSQL refuses a new partition while DEFAULT holds rows of its range,
    so in one transaction: detach DEFAULT (PostgreSQL 14 and later drop the
    row triggers it had cloned from the parent, so its append-only rule does
    not apply while it stands alone), create the month, copy the month's rows
    into it through the parent, delete them from the detached DEFAULT, attach
    DEFAULT again (its triggers are cloned again; its TRUNCATE trigger is its
    own and stays). No row is rewritten: each moves to the partition its time
    always called for. The parent stays locked for the whole transaction, so
    readers and writers wait for as long as the copy takes (milliseconds for
    the few rows an odd clock leaves there); hence never done by a writer.
    """
    default = table(schema, f"{parent}_{DEFAULT_SUFFIX}")
    bounds = (month, add_months(month, 1))
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', '5s', true)")
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(table(schema, parent), default))
            create_month(conn, schema, month, parent)
            in_month = sql.SQL("event_time >= %s AND event_time < %s")
            # By name: a DEFAULT partition attached from an older table may order its columns otherwise.
            columns = sql.SQL(", ").join(sql.Identifier(name) for (name,) in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum", (_regclass_text(schema, parent),)).fetchall())
            moved = conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE {}").format(
                table(schema, parent), columns, columns, default, in_month), bounds).rowcount
            deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(default, in_month), bounds).rowcount
            if deleted != moved:
                raise PartitionError(f"moving {partition_name(month, parent)} out of the default partition copied "
                                     f"{moved} rows but would delete {deleted}; nothing changed")
            conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} DEFAULT").format(table(schema, parent),
                                                                                       default))
    except psycopg.errors.LockNotAvailable:
        raise PartitionError(f"cannot create {partition_name(month, parent)}: {parent} stayed locked for 5 s "
                             "(a long query?); try again") from None
    log.info("created %s and moved %d rows of it out of the default partition", partition_name(month, parent),
             moved)
    return moved


def detach_before(conn: psycopg.Connection, schema: str, before: datetime, *, archive: str = ARCHIVE_SCHEMA,
                  now: datetime | None = None, parent: str = HISTORY, dry_run: bool = False) -> list[Partition]:
    """Detach every monthly partition that ends at or before `before` and move it to `archive`.

    Refuses a `before` later than the current month's start: the current month
    is still being written. Each partition is detached in its own short
    transaction (waiting at most 5 s for the lock), so a failure leaves the
    ones done detached and the rest attached; running it again goes on.
    """
    if before > month_of(now or datetime.now(UTC)):
        raise PartitionError(f"--before {before.isoformat()} is later than the current month's start; only "
                             "past months can be detached")
    chosen = [p for p in list_partitions(conn, schema, parent)
              if not p.is_default and p.upper is not None and p.upper <= before]
    if dry_run:
        return chosen
    for partition in chosen:
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', '5s', true)")
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(archive)))
                conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                    table(schema, parent), table(partition.schema, partition.name)))
                conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                    table(partition.schema, partition.name), sql.Identifier(archive)))
        except psycopg.errors.LockNotAvailable:
            raise PartitionError(f"{parent} stayed locked for 5 s while detaching {partition.name} (a long query?); "
                                 "the months before it are detached, run the command again") from None
        except psycopg.errors.DuplicateTable:
            raise PartitionError(f"{archive}.{partition.name} exists already; drop or rename it first") from None
    return chosen


def move_with_partitions(conn: psycopg.Connection, from_schema: str, name: str, to_schema: str) -> None:
    """`ALTER TABLE ... SET SCHEMA` for a table and, if partitioned, its partitions (which do not follow it)."""
    parts = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname", (_regclass_text(from_schema, name),)).fetchall()
    conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(sql.Identifier(from_schema, name),
                                                                sql.Identifier(to_schema)))
    for (part,) in parts:
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(sql.Identifier(from_schema, part),
                                                                    sql.Identifier(to_schema)))
