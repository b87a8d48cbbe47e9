"""Versioned schema migrations: `migrations/NNNN_name.sql`, applied once, in order.

The tables are a public interface, so their shape only ever changes through a
numbered file that `assetlog db migrate` applies and records in
`schema_migrations` (with a checksum, so an edited applied file is caught
instead of silently diverging). Migrations run under a session advisory lock,
so concurrent migrators (several consumers starting at once) serialise, and
consecutive pending files run in one transaction: a failing migration leaves
nothing of its group half-applied.

A migration may have an *online step* (`ONLINE_STEPS`): Python that runs just
before its file, outside any transaction, for work that one transaction would
do under a long lock (0005 partitions `lineage_history` while readers and
writers go on, see `history_migration.py`; 0006 and 0008 build indexes concurrently,
see `online_indexes.py`; 0010 adds a column, fills it and
builds indexes with it, see `explicit_since_migration.py`). The step must be safe to run again
after an interruption; the file then runs in a transaction as usual and
records the version.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

import psycopg

from assetlog.errors import AssetlogError
from assetlog.projections.explicit_since_migration import add_explicit_since
from assetlog.projections.history_migration import partition_history
from assetlog.projections.online_indexes import build_code_point_edge_index, build_key_hash_indexes

MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Arbitrary constant shared by every Assetlog migrator: pg_advisory_xact_lock(key).
ADVISORY_LOCK_KEY = 0x61737365746C6F67  # "assetlog"

_BOOTSTRAP = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Migrations applied by `assetlog db migrate`, one row per migrations/NNNN_name.sql file.';
COMMENT ON COLUMN schema_migrations.version IS 'The NNNN of the file.';
COMMENT ON COLUMN schema_migrations.name IS 'The name part of the file.';
COMMENT ON COLUMN schema_migrations.checksum IS 'SHA-256 of the file as applied; a different file with the same version is refused.';
COMMENT ON COLUMN schema_migrations.applied_at IS 'When it was applied.';
"""


class MigrationError(AssetlogError):
    """The database's recorded migrations disagree with the shipped files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass
class MigrationResult:
    """What `migrate` did: versions applied now, and the schema version afterwards."""

    applied: list[int] = field(default_factory=list)
    already_applied: list[int] = field(default_factory=list)
    version: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"applied": self.applied, "already_applied": self.already_applied, "version": self.version}


def shipped_migrations() -> list[Migration]:
    """The migration files packaged with this version of Assetlog, in version order."""
    folder = resources.files("assetlog.projections") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


def online_steps() -> dict[int, Callable[[psycopg.Connection], object]]:
    """Migration versions whose file is preceded by an online step (run in autocommit mode)."""

    return {5: partition_history, 6: build_code_point_edge_index, 8: build_key_hash_indexes,
            10: add_explicit_since}


def migrate(target: str | psycopg.Connection, migrations: list[Migration] | None = None) -> MigrationResult:
    """Apply the pending migrations to the database `target` (a DSN or an open connection).

    Idempotent: a second call applies nothing. Raises MigrationError if a
    recorded migration's checksum differs from the shipped file.
    """
    if isinstance(target, str):
        with psycopg.connect(target, application_name="assetlog.migrate") as conn:
            return _migrate(conn, migrations)
    return _migrate(target, migrations)


def _wait_for_the_lock(conn: psycopg.Connection) -> None:
    """Take the migrators' advisory lock, waiting between tries rather than inside a statement.

    An online step's CREATE INDEX CONCURRENTLY waits for every transaction running in the database,
    and a migrator blocked inside `pg_advisory_lock` is one, waiting in turn for the lock that step's
    session holds: PostgreSQL reported a deadlock and failed one of them (two `assetlog stack up` at
    once on a database that needed 0008). Between tries a waiting migrator runs nothing.
    """
    pause = 0.05
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def _migrate(conn: psycopg.Connection, migrations: list[Migration] | None) -> MigrationResult:
    migrations = shipped_migrations() if migrations is None else migrations
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError("migrate needs a connection with no transaction open")
    previous = conn.autocommit
    conn.autocommit = True  # online steps commit as they go; the files run in explicit transactions
    try:
        _wait_for_the_lock(conn)
        try:
            return _apply(conn, migrations)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    finally:
        if not conn.closed:
            conn.autocommit = previous


def _apply(conn: psycopg.Connection, migrations: list[Migration]) -> MigrationResult:
    result = MigrationResult()
    with conn.transaction():
        conn.execute(_BOOTSTRAP)
        recorded = {
            version: (name, checksum)
            for version, name, checksum in conn.execute("SELECT version, name, checksum FROM schema_migrations")
        }
    pending: list[Migration] = []
    for migration in migrations:
        if migration.version not in recorded:
            pending.append(migration)
            continue
        name, checksum = recorded[migration.version]
        if checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{name} was applied from a different file than the "
                f"one shipped ({migration.version:04d}_{migration.name}.sql); never edit an applied "
                "migration, add a new one"
            )
        result.already_applied.append(migration.version)
    steps = online_steps()
    while pending:
        # One transaction per run of files up to the next one with an online step.
        group = [pending.pop(0)]
        while pending and pending[0].version not in steps:
            group.append(pending.pop(0))
        if group[0].version in steps:
            steps[group[0].version](conn)
        with conn.transaction():
            for migration in group:
                conn.execute(migration.sql.encode("utf-8"))
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                result.applied.append(migration.version)
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    result.version = int(row[0]) if row else 0
    return result


def schema_version(conn: psycopg.Connection) -> int:
    """The highest applied migration, or 0 when `assetlog db migrate` never ran here."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def require_migrated(conn: psycopg.Connection) -> int:
    """Raise a user-facing error when the shipped migrations are not all applied."""
    have = schema_version(conn)
    want = max((m.version for m in shipped_migrations()), default=0)
    if have < want:
        raise MigrationError(
            f"the database is at schema version {have}, this Assetlog needs {want}: run `assetlog db migrate` first"
        )
    return have
