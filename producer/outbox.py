"""The durable local outbox: SQLite in ASSETLOG_OUTBOX_DIR, shared by processes.

Events are committed here before they are handed to Kafka and deleted on their
delivery report, so a broker outage or a crash between the two loses nothing.
One row holds many messages of one topic (written by one group commit), which
keeps SQLite far off the hot path. Each row has an owner (one live publisher);
rows of publishers that are gone (closed, dead process, stale heartbeat) are
adopted by the next publisher that looks, so exactly one process resends them.

Durability: WAL with synchronous=NORMAL survives any crash of the writing
process; only a power cut or kernel crash can lose the last commits.

A row Kafka can never accept (e.g. over its size limit) is marked undeliverable:
no publisher sends it again or waits for it, and `assetlog outbox dead-letter`
moves it into the `dead_letters` table, where it is kept, out of the way.
Errors about the file itself (full, unwritable, damaged) are raised as
`OutboxUnavailable`, whose one-line message names the path and the way out.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from assetlog.producer.outbox_inspection import OutboxInspection, pid_alive
from assetlog.producer.outbox_payload import Message, checksum, pack_messages, unpack_messages
from assetlog.producer.recording_errors import outbox_problem

__all__ = ["Message", "Outbox", "StoredRow", "checksum", "outbox_path", "pack_messages", "pid_alive",
           "unpack_messages"]

OUTBOX_FILE = "outbox.sqlite3"
SCHEMA_VERSION = 2
# A publisher that has not written a heartbeat for this long is presumed dead.
LEASE_SECONDS = 30.0
BUSY_TIMEOUT_MS = 10_000
WAL_CHECKPOINT_PAGES = 128

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY,
    created_at  REAL    NOT NULL,
    topic       TEXT    NOT NULL,
    events      INTEGER NOT NULL,
    payload     BLOB    NOT NULL,
    owner       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    undeliverable INTEGER NOT NULL DEFAULT 0,
    checksum    INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_owner ON outbox (owner);
CREATE TABLE IF NOT EXISTS publishers (
    owner        TEXT PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL    NOT NULL,
    heartbeat_at REAL    NOT NULL
);
"""
# v1 -> v2: undeliverable rows, and a table to move them to.
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL,
    created_at  REAL    NOT NULL,
    moved_at    REAL    NOT NULL,
    topic       TEXT    NOT NULL,
    events      INTEGER NOT NULL,
    payload     BLOB    NOT NULL,
    attempts    INTEGER NOT NULL,
    last_error  TEXT,
    checksum    INTEGER
);
"""


@dataclass(frozen=True)
class StoredRow:
    id: int
    topic: str
    events: int
    attempts: int


def outbox_path(directory: Path) -> Path:
    return Path(directory) / OUTBOX_FILE


class Outbox(OutboxInspection):
    """One connection to the outbox file; use it from one thread.

    `read_only` opens an existing file without writing anything to it (no schema
    upgrade, no journal change), so `assetlog outbox status` works on a full disk
    or in a read-only folder. Any failure to open raises `OutboxUnavailable`.
    """

    def __init__(self, directory: Path, *, create: bool = True, read_only: bool = False) -> None:
        self.path = outbox_path(directory)
        if (read_only or not create) and not self.path.exists():
            raise FileNotFoundError(self.path)
        try:
            self.conn = self._connect(create and not read_only, read_only)
            if create and not read_only:
                self._migrate()
        except (sqlite3.Error, OSError) as exc:
            problem = outbox_problem(self.path, exc)
            if problem is None:
                raise
            raise problem from exc

    def _connect(self, create: bool, read_only: bool) -> sqlite3.Connection:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if read_only:
            return self._connect_read_only()
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Rows are large (thousands of events): big pages mean short overflow chains, which
            # makes both the insert and the delete of a row several times cheaper. It only
            # applies to a new file (before WAL is enabled).
            conn.execute("PRAGMA page_size = 65536")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # With 64 KiB pages SQLite's default (1,000 pages) lets the log grow to 64 MiB before it is
            # folded back: bound it, so an outbox on a small disk recovers the room its deleted rows free.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_CHECKPOINT_PAGES * 65536}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """Read without writing. A WAL file needs its shared-memory file, which SQLite cannot
        create on a full disk or a read-only folder; a cleanly closed outbox has no log left
        to read, so it is then opened as immutable (no locks, no shared memory)."""
        last: sqlite3.Error | None = None
        for query in ("mode=ro", "immutable=1"):
            log_file = Path(f"{self.path}-wal")
            if query == "immutable=1" and log_file.exists() and log_file.stat().st_size > 0:
                break  # a log to read: an immutable open would miss it
            conn = sqlite3.connect(f"file:{self.path}?{query}", uri=True, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails here if damaged
                return conn
            except sqlite3.Error as exc:
                conn.close()
                last = exc
        assert last is not None
        raise last

    def _migrate(self) -> None:
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} was written by a newer Assetlog (outbox schema {version})")
        if version < SCHEMA_VERSION:
            with self.transaction():
                if version == 1:
                    self.conn.execute("ALTER TABLE outbox ADD COLUMN undeliverable INTEGER NOT NULL DEFAULT 0")
                    self.conn.execute("ALTER TABLE outbox ADD COLUMN checksum INTEGER")
                for statement in (_SCHEMA + _SCHEMA_V2).split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the file and truncate it: after a full disk the log
        is most of what the outbox takes, and deleted rows only free room once checkpointed."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()

    # -- writing ------------------------------------------------------------------------------------
    def append(self, rows: Iterable[tuple[str, Sequence[Message]]], owner: str | None) -> list[int]:
        """Commit rows of (topic, messages) in one transaction; returns their ids."""
        now = time.time()
        ids: list[int] = []
        with self.transaction():
            for topic, messages in rows:
                payload = pack_messages(messages)
                cursor = self.conn.execute(
                    "INSERT INTO outbox (created_at, topic, events, payload, owner, checksum) VALUES (?, ?, ?, ?, ?, ?)",
                    (now, topic, len(messages), payload, owner, checksum(payload)),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def delete(self, ids: Sequence[int]) -> None:
        if ids:
            with self.transaction():
                self.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def record_failure(self, row_id: int, error: str, remaining: Sequence[Message] | None) -> None:
        """Keep the row, note why; `remaining` shrinks it to the messages not delivered."""
        with self.transaction():
            if remaining is None:
                self.conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                                  (error, row_id))
            else:
                payload = pack_messages(remaining)
                self.conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?, events = ?, payload = ?, checksum = ? "
                    "WHERE id = ?", (error, len(remaining), payload, checksum(payload), row_id))

    def set_undeliverable(self, row_id: int, error: str, undeliverable: Sequence[Message],
                          remaining: Sequence[Message]) -> int:
        """Split a row: `undeliverable` messages into a row of their own, marked so no publisher
        sends it again; the row keeps `remaining` (deleted if none). Returns the marked row's id."""
        with self.transaction():
            topic, created_at, attempts = self.conn.execute(
                "SELECT topic, created_at, attempts FROM outbox WHERE id = ?", (row_id,)).fetchone()
            marked = pack_messages(undeliverable)
            cursor = self.conn.execute(
                "INSERT INTO outbox (created_at, topic, events, payload, owner, attempts, last_error, undeliverable, "
                "checksum) VALUES (?, ?, ?, ?, NULL, ?, ?, 1, ?)",
                (created_at, topic, len(undeliverable), marked, attempts + 1, error, checksum(marked)))
            if remaining:
                payload = pack_messages(remaining)
                self.conn.execute("UPDATE outbox SET events = ?, payload = ?, checksum = ? WHERE id = ?",
                                  (len(remaining), payload, checksum(payload), row_id))
            else:
                self.conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        return int(cursor.lastrowid or 0)

    def load(self, row_id: int) -> tuple[str, list[Message]] | None:
        row = self.conn.execute("SELECT topic, payload FROM outbox WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            return None
        return row[0], unpack_messages(row[1])

    # -- ownership ----------------------------------------------------------------------------------
    def register(self, owner: str) -> None:
        now = time.time()
        with self.transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO publishers (owner, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
                (owner, socket.gethostname(), os.getpid(), now, now))

    def heartbeat(self, owner: str) -> None:
        """Say `owner` is alive; if it was presumed dead meanwhile (its rows may have been
        adopted), register it again so its new rows are not taken as orphans."""
        with self.transaction():
            cursor = self.conn.execute("UPDATE publishers SET heartbeat_at = ? WHERE owner = ?", (time.time(), owner))
            if cursor.rowcount == 0:
                now = time.time()
                self.conn.execute(
                    "INSERT INTO publishers (owner, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
                    (owner, socket.gethostname(), os.getpid(), now, now))

    def unregister(self, owner: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM publishers WHERE owner = ?", (owner,))

    def adopt(self, owner: str, lease_seconds: float = LEASE_SECONDS) -> list[StoredRow]:
        """Take over the rows of publishers that are gone; returns every row `owner` now holds
        that it may not know about (the caller skips those it already tracks)."""
        host = socket.gethostname()
        with self.transaction():
            stale = time.time() - lease_seconds
            self.conn.execute("DELETE FROM publishers WHERE heartbeat_at < ? AND owner != ?", (stale, owner))
            for other, pid in self.conn.execute(
                    "SELECT owner, pid FROM publishers WHERE host = ? AND owner != ?", (host, owner)).fetchall():
                if not pid_alive(pid):
                    self.conn.execute("DELETE FROM publishers WHERE owner = ?", (other,))
            self.conn.execute(
                "UPDATE outbox SET owner = ? WHERE undeliverable = 0 AND "
                "(owner IS NULL OR owner NOT IN (SELECT owner FROM publishers))", (owner,))
            rows = self.conn.execute(
                "SELECT id, topic, events, attempts FROM outbox WHERE owner = ? AND undeliverable = 0 ORDER BY id",
                (owner,)).fetchall()
        return [StoredRow(*row) for row in rows]

class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK): take the write lock up front so two
    processes never deadlock upgrading read locks."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        # SQLite may already have rolled back by itself (on a full disk, for one): a second
        # ROLLBACK would hide the real error behind "no transaction is active".
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
