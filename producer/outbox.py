"""The durable local outbox: SQLite in ASSETLOG_OUTBOX_DIR, shared by processes.

Events are committed here before they are handed to Kafka and deleted on their
delivery report, so a broker outage or a crash between the two loses nothing.
One row holds many messages of one topic (written by one group commit), which
keeps SQLite far off the hot path. Each row has an owner (one live publisher);
rows of publishers that are gone (closed, dead process, stale heartbeat) are
adopted by the next publisher that looks, so exactly one process resends them.

Durability: WAL with synchronous=NORMAL survives any crash of the writing
process; only a power cut or kernel crash can lose the last commits.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTBOX_FILE = "outbox.sqlite3"
SCHEMA_VERSION = 1
# A publisher that has not written a heartbeat for this long is presumed dead.
LEASE_SECONDS = 30.0
BUSY_TIMEOUT_MS = 10_000
_LENGTH = struct.Struct(">I")

Message = tuple[bytes, bytes]  # (key, value)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY,
    created_at  REAL    NOT NULL,
    topic       TEXT    NOT NULL,
    events      INTEGER NOT NULL,
    payload     BLOB    NOT NULL,
    owner       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT
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


def pack_messages(messages: Sequence[Message]) -> bytes:
    """(key, value) pairs as length-prefixed bytes: the row payload."""
    parts: list[bytes] = []
    add = parts.append
    pack = _LENGTH.pack
    for key, value in messages:
        add(pack(len(key)))
        add(key)
        add(pack(len(value)))
        add(value)
    return b"".join(parts)


def unpack_messages(payload: bytes) -> list[Message]:
    messages: list[Message] = []
    view = memoryview(payload)
    offset, end = 0, len(payload)
    unpack = _LENGTH.unpack_from
    while offset < end:
        (key_length,) = unpack(view, offset)
        offset += 4
        key = bytes(view[offset:offset + key_length])
        offset += key_length
        (value_length,) = unpack(view, offset)
        offset += 4
        value = bytes(view[offset:offset + value_length])
        offset += value_length
        messages.append((key, value))
    if offset != end:
        raise ValueError("corrupt outbox payload: a message runs past the end of the row")
    return messages


@dataclass(frozen=True)
class StoredRow:
    id: int
    topic: str
    events: int
    attempts: int


def outbox_path(directory: Path) -> Path:
    return Path(directory) / OUTBOX_FILE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


class Outbox:
    """One connection to the outbox file; use it from one thread."""

    def __init__(self, directory: Path, *, create: bool = True) -> None:
        self.path = outbox_path(directory)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not self.path.exists():
            raise FileNotFoundError(self.path)
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                                    check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Rows are large (thousands of events): big pages mean short overflow chains, which
        # makes both the insert and the delete of a row several times cheaper. It only
        # applies to a new file (before WAL is enabled).
        self.conn.execute("PRAGMA page_size = 65536")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        if create:
            self._migrate()

    def _migrate(self) -> None:
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} was written by a newer Assetlog (outbox schema {version})")
        if version < SCHEMA_VERSION:
            with self.transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
                cursor = self.conn.execute(
                    "INSERT INTO outbox (created_at, topic, events, payload, owner) VALUES (?, ?, ?, ?, ?)",
                    (now, topic, len(messages), pack_messages(messages), owner),
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
                self.conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?, events = ?, payload = ? "
                    "WHERE id = ?", (error, len(remaining), pack_messages(remaining), row_id))

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
                if not _pid_alive(pid):
                    self.conn.execute("DELETE FROM publishers WHERE owner = ?", (other,))
            self.conn.execute(
                "UPDATE outbox SET owner = ? WHERE owner IS NULL OR owner NOT IN (SELECT owner FROM publishers)",
                (owner,))
            rows = self.conn.execute(
                "SELECT id, topic, events, attempts FROM outbox WHERE owner = ? ORDER BY id", (owner,)).fetchall()
        return [StoredRow(*row) for row in rows]

    # -- reading ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.time()
        total_events, total_rows, oldest = self.conn.execute(
            "SELECT COALESCE(SUM(events), 0), COUNT(*), MIN(created_at) FROM outbox").fetchone()
        per_topic = {topic: events for topic, events in self.conn.execute(
            "SELECT topic, SUM(events) FROM outbox GROUP BY topic ORDER BY topic")}
        errors = [{"error": error, "events": events} for error, events in self.conn.execute(
            "SELECT last_error, SUM(events) FROM outbox WHERE last_error IS NOT NULL "
            "GROUP BY last_error ORDER BY SUM(events) DESC LIMIT 5")]
        publishers = [
            {"host": host, "pid": pid, "heartbeat_age_seconds": round(now - beat, 1), "events": events}
            for host, pid, beat, events in self.conn.execute(
                "SELECT p.host, p.pid, p.heartbeat_at, COALESCE(SUM(o.events), 0) FROM publishers p "
                "LEFT JOIN outbox o ON o.owner = p.owner GROUP BY p.owner ORDER BY p.started_at")]
        return {
            "path": str(self.path),
            "events": int(total_events),
            "rows": int(total_rows),
            "oldest_age_seconds": round(now - oldest, 3) if oldest is not None else None,
            "topics": per_topic,
            "errors": errors,
            "publishers": publishers,
        }

    def pending_events(self) -> int:
        (count,) = self.conn.execute("SELECT COALESCE(SUM(events), 0) FROM outbox").fetchone()
        return int(count)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK): take the write lock up front so two
    processes never deadlock upgrading read locks."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
