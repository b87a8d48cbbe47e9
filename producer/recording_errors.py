"""Why a task run's lineage could not be recorded, as errors that reach the caller.

A producer must never drop an event silently: when the events of a task run
cannot be made durable (the outbox cannot be written) or can never be delivered
(larger than Kafka accepts), the task run must not look successful. These
errors are the ones the runtime lets through to user code; each message is one
line naming the path, asset, size or topic and what to do about it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from assetlog.errors import AssetlogError, ConfigError

# What went wrong with the outbox file, by how an operator gets out of it.
FULL = "full"  # its file system is full: room can come back, waiting may help
UNWRITABLE = "unwritable"  # permissions, read-only mount: a configuration fix
DAMAGED = "damaged"  # not a readable SQLite file: `assetlog outbox salvage`

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL = 8, 10, 11, 13
_SQLITE_CANTOPEN, _SQLITE_NOTADB, _SQLITE_PERM, _SQLITE_AUTH = 14, 26, 3, 23
_ENOSPC, _EDQUOT = 28, 122


class LineageNotRecorded(AssetlogError):
    """The events of a task run cannot be recorded; the run must fail rather than look successful."""


class OutboxUnavailable(LineageNotRecorded):
    """The outbox cannot be opened or written (see `kind`)."""

    def __init__(self, message: str, kind: str, path: Path, *, unexplained: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path
        # An I/O error SQLite gave no reason for, met with room on the file system: taken for
        # `unwritable`, but room freed between the failed write and the look at the file system
        # gives the same (`OutboxGate.report` keeps a full episode full on it).
        self.unexplained = unexplained


class EventTooLarge(LineageNotRecorded, ValueError):
    """An event larger than Kafka accepts: refused where it is made, never queued."""


class MissingTopics(ConfigError):
    """The brokers answered and the event topics are not there."""


def outbox_problem(path: Path, exc: BaseException) -> OutboxUnavailable | None:
    """The outbox-level meaning of an error raised while using the file at `path`, or None
    when it says nothing about the file (a busy lock, a bug)."""
    if isinstance(exc, OutboxUnavailable):
        return exc
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        text = str(exc)
        if code == _SQLITE_FULL or "disk is full" in text:
            return _full(path, text)
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
            return OutboxUnavailable(
                f"the outbox {path} is damaged ({text}): `assetlog outbox salvage` keeps its readable events "
                f"and sets the file aside", DAMAGED, path)
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_AUTH) or "readonly" in text:
            return _unwritable(path, text)
        if code == _SQLITE_IOERR:  # SQLite does not pass errno on: a file system without room is "full"
            return _full(path, text) if "full" in text or _no_room(path) else _unwritable(path, text, unexplained=True)
        return None
    if isinstance(exc, OSError):
        if exc.errno in (_ENOSPC, _EDQUOT):
            return _full(path, exc.strerror or str(exc))
        return _unwritable(path, exc.strerror or str(exc))
    return None


def _no_room(path: Path) -> bool:
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20  # less than a MiB: a 64 KiB-page write may not fit


def _full(path: Path, text: str) -> OutboxUnavailable:
    return OutboxUnavailable(f"the file system of the outbox {path} is full ({text}): make room there",
                             FULL, path)


def _unwritable(path: Path, text: str, unexplained: bool = False) -> OutboxUnavailable:
    return OutboxUnavailable(
        f"cannot write the outbox {path} ({text}): make its folder writable or point ASSETLOG_OUTBOX_DIR "
        f"at one that is", UNWRITABLE, path, unexplained=unexplained)
