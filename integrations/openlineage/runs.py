"""Where a run's accumulated inputs and outputs live between its events: a small SQLite file.

It sits next to the producer's outbox (`<ASSETLOG_OUTBOX_DIR>/openlineage-runs.sqlite3`):
like the outbox it is local state of the process that publishes, so the receiver
needs no database of its own. Several receivers on one machine share it (WAL,
busy timeout); receivers on different machines each keep their own, which is
right as long as a run's events reach one receiver (what a client does). State
is written only after the run's events are durable in the outbox, so a crash in
between makes the client resend, and the resent event writes the same event ids.
The saves of concurrent requests share one transaction (group commit: the first
to get the write lock writes everyone's pending rows), and loads go through a
connection of their own, so they never wait for a commit.
Finished runs are kept `KEEP_FINISHED_SECONDS` (a late OTHER event still finds
them), unfinished ones `KEEP_UNFINISHED_SECONDS` (streaming jobs run for weeks).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from assetlog.integrations.openlineage.ingest import RunState

FILE_NAME = "openlineage-runs.sqlite3"
KEEP_FINISHED_SECONDS = 7 * 86400
KEEP_UNFINISHED_SECONDS = 90 * 86400


class RunStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE_NAME
        self._lock = threading.Lock()  # the writing connection
        self._conn = self._connect()
        self._conn.execute("CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, state BLOB NOT NULL, "
                           "finished INTEGER NOT NULL, updated REAL NOT NULL)")
        self._read_lock = threading.Lock()
        self._reader = self._connect()
        self._pending_lock = threading.Lock()
        self._pending: list[tuple[str, bytes, int, float]] = []
        self._queued = 0  # saves handed in so far; _written: how many of them are committed
        self._written = 0
        self.prune()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def load(self, run_id: str) -> RunState:
        with self._read_lock:
            row = self._reader.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return RunState.from_json(row[0]) if row else RunState()

    def save(self, run_id: str, state: RunState, finished: bool) -> None:
        """Returns once the state is committed, by this call or by a concurrent one that took it along."""
        self.save_many([(run_id, state, finished)])

    def save_many(self, runs: list[tuple[str, RunState, bool]]) -> None:
        """`save` for several runs at once (one transaction with whatever else is pending)."""
        now = time.time()
        with self._pending_lock:
            self._pending.extend((run_id, state.to_json(), int(finished), now) for run_id, state, finished in runs)
            self._queued += len(runs)
            ticket = self._queued
        with self._lock:
            if self._written >= ticket:
                return
            with self._pending_lock:
                rows, self._pending, last = self._pending, [], self._queued
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO runs (run_id, state, finished, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, "
                    "finished = max(runs.finished, excluded.finished), updated = excluded.updated", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                with self._pending_lock:  # the others' rows go back: each waiting save writes them again
                    self._pending[:0] = rows
                raise
            self._written = last

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM runs WHERE (finished = 1 AND updated < ?) OR updated < ?",
                (now - KEEP_FINISHED_SECONDS, now - KEEP_UNFINISHED_SECONDS))
        return cursor.rowcount

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._conn.close()
            self._reader.close()
