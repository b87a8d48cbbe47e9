"""`assetlog outbox salvage`: keep every readable event of a damaged outbox, set the file aside.

A truncated or corrupt SQLite file stops every publisher on it. Salvage reads
what can still be read, row by row (stepping over damaged pages), checks each
row's payload, writes the good rows to a fresh outbox (unowned, so the next
publisher sends them) and renames the damaged file (with its write-ahead log)
to `outbox.sqlite3.damaged-<UTC time>` next to it: never deleted, so anything
salvage could not read can still be looked at.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from assetlog.errors import AssetlogError
from assetlog.producer.outbox import Outbox, checksum, outbox_path, pack_messages, pid_alive, unpack_messages

# How far past an unreadable row to look for the next readable one: ids grow by one per row, so a
# damaged page holds a run of consecutive ids; probing at doubling distances finds the end of the run.
_MAX_SKIP = 1 << 40
# A truncated file is padded (sparsely) to the size its header states, up to this much.
_MAX_PADDED_BYTES = 64 << 30


def _read_rows(conn: sqlite3.Connection, table: str) -> tuple[list[dict[str, Any]], int]:
    """Every row of `table` that can be read, in id order, and how many gaps were stepped over.

    Ids must keep growing: a damaged tree can answer out of order, and that counts as a gap
    too, so the walk always ends."""
    rows: list[dict[str, Any]] = []
    gaps, after = 0, 0
    query = f"SELECT * FROM {table} WHERE id > ? ORDER BY id LIMIT 1"  # noqa: S608 - a fixed table name
    while True:
        try:
            cursor = conn.execute(query, (after,))
            row = cursor.fetchone()
            if row is not None and int(dict(zip([d[0] for d in cursor.description], row, strict=True))["id"]) <= after:
                raise sqlite3.DatabaseError("ids out of order")
        except (sqlite3.DatabaseError, OverflowError, ValueError, TypeError):
            found = _next_readable(conn, query, after)
            if found is None:
                return rows, gaps + 1
            gaps += 1
            after = found - 1
            continue
        if row is None:
            return rows, gaps
        names = [d[0] for d in cursor.description]
        record = dict(zip(names, row, strict=True))
        rows.append(record)
        after = int(record["id"])


def _next_readable(conn: sqlite3.Connection, query: str, after: int) -> int | None:
    """The id of the first readable row well past `after`, probing at doubling distances."""
    skip = 1
    while skip <= _MAX_SKIP:
        try:
            row = conn.execute(query, (after + skip,)).fetchone()
        except (sqlite3.DatabaseError, OverflowError):
            skip *= 2
            continue
        if row is None:
            return None
        try:
            found = int(row[0])
        except (TypeError, ValueError):
            found = after
        if found > after + 1:
            return found
        skip *= 2  # out of order: damaged, look further
    return None


def _live_publishers(conn: sqlite3.Connection) -> list[int]:
    try:
        found = conn.execute("SELECT host, pid FROM publishers").fetchall()
    except (sqlite3.DatabaseError, ValueError):
        return []
    return [pid for host, pid in found if host == socket.gethostname() and pid_alive(pid) and pid != os.getpid()]


def _readable_copy(path: Path, scratch: Path) -> Path:
    """SQLite refuses a whole file shorter than its header says (truncated): read a copy padded
    with zero pages instead, so that only the rows on the missing pages are lost."""
    header = path.read_bytes()[:100]
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return path
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size = path.stat().st_size
    if not page_size or size >= page_size * pages or page_size * pages > _MAX_PADDED_BYTES:
        return path  # whole, or a header too damaged to trust
    copy = scratch / path.name
    shutil.copyfile(path, copy)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            shutil.copyfile(side, Path(f"{copy}{suffix}"))
    with open(copy, "r+b") as handle:
        handle.truncate(page_size * pages)
    return copy


def salvage(directory: Path) -> dict[str, Any]:
    """Rebuild the outbox in `directory` from its readable rows; returns what was kept and lost."""
    path = outbox_path(directory)
    if not path.exists():
        raise AssetlogError(f"there is no outbox at {path}: nothing to salvage")
    reading = Path(tempfile.mkdtemp(prefix=".salvage-read-", dir=directory))
    try:
        return _salvage(directory, path, _readable_copy(path, reading))
    finally:
        shutil.rmtree(reading, ignore_errors=True)


def _salvage(directory: Path, path: Path, source: Path) -> dict[str, Any]:
    try:
        conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AssetlogError(f"cannot open the outbox {path} even to read it ({exc})") from exc
    conn.text_factory = lambda data: data.decode("utf-8", "replace")  # damaged text must not stop the read
    try:
        healthy = source == path and _healthy(conn)  # a padded copy is damaged by definition
        live = _live_publishers(conn)
        if live:
            raise AssetlogError(f"the outbox {path} is in use by a running publisher (pid "
                                f"{', '.join(map(str, live))}): stop it first")
        try:
            rows, gaps = _read_rows(conn, "outbox")
        except (sqlite3.DatabaseError, ValueError):
            rows, gaps = [], 1
        try:
            dead, _ = _read_rows(conn, "dead_letters")
        except (sqlite3.DatabaseError, ValueError):
            dead = []
    finally:
        conn.close()
    kept = [(row, unpack_messages(bytes(row["payload"]))) for row in rows if _intact(row)]
    lost = gaps + len(rows) - len(kept)
    dead_intact = [letter for letter in dead if _intact(letter)]
    if healthy and not lost and len(dead_intact) == len(dead):
        return {"path": str(path), "damaged": False, "set_aside": None, "rows_kept": len(rows),
                "events_kept": sum(int(r["events"]) for r in rows), "rows_lost": 0, "dead_letters_kept": len(dead)}
    dead = dead_intact
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    _rebuild(directory, path, aside, kept, dead)
    return {"path": str(path), "damaged": True, "set_aside": str(aside), "rows_kept": len(kept),
            "events_kept": sum(len(m) for _, m in kept), "rows_lost": lost, "dead_letters_kept": len(dead)}


def _intact(row: dict[str, Any]) -> bool:
    """A row is kept if its payload parses and, when it has one (schema v2), matches its checksum."""
    try:
        payload = bytes(row["payload"])
        unpack_messages(payload)
        stored = row.get("checksum")
        return stored is None or int(stored) == checksum(payload)
    except (ValueError, TypeError, KeyError):
        return False


def _healthy(conn: sqlite3.Connection) -> bool:
    try:
        return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except (sqlite3.DatabaseError, ValueError):  # a damaged file can even garble SQLite's own report
        return False


def _rebuild(directory: Path, path: Path, aside: Path, kept: list[tuple[dict[str, Any], list]],
             dead: list[dict[str, Any]]) -> None:
    """Write the new outbox beside the old one, then swap: the damaged file is renamed, not removed."""
    scratch = Path(tempfile.mkdtemp(prefix=".salvage-", dir=directory))
    try:
        fresh = Outbox(scratch)
        try:
            with fresh.transaction() as conn:
                for row, messages in kept:
                    conn.execute(
                        "INSERT INTO outbox (created_at, topic, events, payload, owner, attempts, last_error, "
                        "undeliverable, checksum) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)",
                        (row["created_at"], row["topic"], len(messages), pack_messages(messages),
                         row.get("attempts", 0), row.get("last_error"), row.get("undeliverable", 0),
                         checksum(pack_messages(messages))))
                for letter in dead:
                    conn.execute(
                        "INSERT INTO dead_letters (outbox_id, created_at, moved_at, topic, events, payload, attempts, "
                        "last_error, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (letter["outbox_id"], letter["created_at"], letter["moved_at"], letter["topic"],
                         letter["events"], letter["payload"], letter["attempts"], letter["last_error"],
                         checksum(bytes(letter["payload"]))))
            fresh.checkpoint()
        finally:
            fresh.close()
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{aside}{suffix}"))
        os.replace(path, aside)
        os.replace(outbox_path(scratch), path)
    except OSError as exc:
        raise AssetlogError(f"cannot rebuild the outbox in {directory} ({exc.strerror or exc}); the damaged "
                            f"file is kept, as {path} or {aside}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
