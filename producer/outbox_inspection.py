"""What operators ask of the outbox: what waits, since when, who holds it, and its dead letters.

`Outbox` inherits these; they read (status, depth) or move rows Kafka can never
accept out of the way (`dead_letter`), and need only the connection, so they
work on a read-only outbox too (except `dead_letter`).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from assetlog.producer.outbox_payload import Message, unpack_messages


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


class OutboxInspection:
    """The operator's side of `Outbox` (see the module's docstring)."""

    conn: sqlite3.Connection
    path: Path

    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]  # Outbox's

    # -- undeliverable rows and dead letters -----------------------------------------------------------
    def dead_letter(self, ids: Sequence[int] | None) -> list[dict[str, Any]]:
        """Move rows (`ids`, or every undeliverable row if None) into `dead_letters`, in one
        transaction; rows a live publisher on this host holds are refused (it would send them)."""
        with self.transaction():
            if ids is None:
                rows = self.conn.execute("SELECT id FROM outbox WHERE undeliverable = 1 ORDER BY id").fetchall()
                ids = [row_id for (row_id,) in rows]
            missing = [i for i in ids if self.conn.execute("SELECT 1 FROM outbox WHERE id = ?", (i,)).fetchone()
                       is None]
            if missing:
                raise LookupError(f"no row {', '.join(map(str, missing))} in the outbox {self.path}")
            for row_id in ids:
                holder = self._live_holder(row_id)
                if holder is not None:
                    raise PermissionError(f"row {row_id} is held by a running publisher (pid {holder}); "
                                          "stop it first, or dead-letter undeliverable rows only")
            now = time.time()
            self.conn.executemany(
                "INSERT INTO dead_letters (outbox_id, created_at, moved_at, topic, events, payload, attempts, "
                "last_error, checksum) SELECT id, created_at, ?, topic, events, payload, attempts, last_error, "
                "checksum FROM outbox "
                "WHERE id = ?", [(now, i) for i in ids])
            self.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            wanted = set(ids)
            moved = [row for row in self.conn.execute(
                "SELECT id, outbox_id, topic, events, last_error FROM dead_letters WHERE moved_at = ? ORDER BY id",
                (now,)) if row[1] in wanted]
        return [{"id": i, "outbox_id": o, "topic": t, "events": e, "error": err} for i, o, t, e, err in moved]

    def _live_holder(self, row_id: int) -> int | None:
        row = self.conn.execute(
            "SELECT p.pid, p.host FROM outbox o JOIN publishers p ON p.owner = o.owner "
            "WHERE o.id = ? AND o.undeliverable = 0", (row_id,)).fetchone()
        if row is None or row[1] != socket.gethostname() or not pid_alive(row[0]):
            return None
        return int(row[0])

    def dead_letters(self) -> list[dict[str, Any]]:
        return [{"id": i, "outbox_id": o, "topic": t, "events": e, "created_at": c, "moved_at": m, "error": err}
                for i, o, t, e, c, m, err in self.conn.execute(
                    "SELECT id, outbox_id, topic, events, created_at, moved_at, last_error FROM dead_letters "
                    "ORDER BY id")]

    def dead_letter_messages(self, dead_letter_id: int) -> list[Message]:
        row = self.conn.execute("SELECT payload FROM dead_letters WHERE id = ?", (dead_letter_id,)).fetchone()
        if row is None:
            raise LookupError(f"no dead letter {dead_letter_id} in the outbox {self.path}")
        return unpack_messages(row[0])

    # -- reading ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What waits, what never will be delivered, and who holds it. Reads only."""
        now = time.time()
        self._status_views()
        total_events, total_rows, oldest = self.conn.execute(
            "SELECT COALESCE(SUM(events), 0), COUNT(*), MIN(created_at) FROM waiting_rows").fetchone()
        per_topic = {topic: events for topic, events in self.conn.execute(
            "SELECT topic, SUM(events) FROM waiting_rows GROUP BY topic ORDER BY topic")}
        errors = [{"error": error, "events": events} for error, events in self.conn.execute(
            "SELECT last_error, SUM(events) FROM waiting_rows WHERE last_error IS NOT NULL "
            "GROUP BY last_error ORDER BY SUM(events) DESC LIMIT 5")]
        undeliverable = [{"id": i, "topic": t, "events": e, "error": err} for i, t, e, err in self.conn.execute(
            "SELECT id, topic, events, last_error FROM undeliverable_rows ORDER BY id")]
        dead = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(events), 0) FROM dead_letter_rows").fetchone()
        host = socket.gethostname()
        publishers = [
            {"host": h, "pid": pid, "heartbeat_age_seconds": round(now - beat, 1), "events": events,
             "alive": pid_alive(pid) if h == host else None}
            for h, pid, beat, events in self.conn.execute(
                "SELECT p.host, p.pid, p.heartbeat_at, COALESCE(SUM(o.events), 0) FROM publishers p "
                "LEFT JOIN outbox o ON o.owner = p.owner GROUP BY p.owner ORDER BY p.started_at")]
        return {
            "path": str(self.path),
            "events": int(total_events),
            "rows": int(total_rows),
            "oldest_age_seconds": round(now - oldest, 3) if oldest is not None else None,
            "oldest_event_timestamp_seconds": oldest,  # as the assetlog_outbox_oldest_event_... metric
            "topics": per_topic,
            "errors": errors,
            "undeliverable": undeliverable,
            "dead_letters": {"rows": int(dead[0]), "events": int(dead[1])},
            "publishers": publishers,
        }

    def _status_views(self) -> None:
        """Temporary views (in memory: nothing is written to the file, which may be read-only
        or on a full disk) that read an outbox of either schema version alike."""
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        self.conn.execute("PRAGMA temp_store = MEMORY")
        for name in ("waiting_rows", "undeliverable_rows", "dead_letter_rows"):
            self.conn.execute(f"DROP VIEW IF EXISTS temp.{name}")
        if version >= 2:
            self.conn.execute("CREATE TEMP VIEW waiting_rows AS SELECT * FROM main.outbox WHERE undeliverable = 0")
            self.conn.execute("CREATE TEMP VIEW undeliverable_rows AS SELECT * FROM main.outbox WHERE undeliverable = 1")
            self.conn.execute("CREATE TEMP VIEW dead_letter_rows AS SELECT * FROM main.dead_letters")
        else:
            self.conn.execute("CREATE TEMP VIEW waiting_rows AS SELECT * FROM main.outbox")
            self.conn.execute("CREATE TEMP VIEW undeliverable_rows AS SELECT * FROM main.outbox WHERE 0")
            self.conn.execute("CREATE TEMP VIEW dead_letter_rows AS SELECT 0 AS events WHERE 0")

    def depth(self) -> tuple[int, int, float | None]:
        """(waiting events, undeliverable events, Unix time of the oldest waiting row): the metrics."""
        waiting, oldest = self.conn.execute(
            "SELECT COALESCE(SUM(events), 0), MIN(created_at) FROM outbox WHERE undeliverable = 0").fetchone()
        (undeliverable,) = self.conn.execute(
            "SELECT COALESCE(SUM(events), 0) FROM outbox WHERE undeliverable = 1").fetchone()
        return int(waiting), int(undeliverable), oldest

    def pending_events(self) -> int:
        (count,) = self.conn.execute("SELECT COALESCE(SUM(events), 0) FROM outbox WHERE undeliverable = 0").fetchone()
        return int(count)
