"""Online migration steps that must take a conflicting lock ask for it briefly, again and again.

A statement waiting for a lock that readers or writers hold makes every later
statement on that table queue behind it: an ALTER TABLE waiting one minute for a
long report stops the consumers for that minute. So a step asks with a short
`lock_timeout` and, refused, lets the queue drain and asks again; the tables are
never held longer than the step itself takes (migrations 0005 and 0010).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from assetlog.errors import AssetlogError

log = logging.getLogger("assetlog.migrate")

LOCK_TIMEOUT_MS = 500  # per attempt
ATTEMPTS = 120

T = TypeVar("T")


class OnlineMigrationError(AssetlogError):
    """The online step could not finish; nothing the readers see has changed."""


def with_short_locks(conn: psycopg.Connection, task: str, what: str, step: Callable[[], T]) -> T:
    """Run `step` in a transaction with a short lock_timeout, again until it gets its locks.

    `conn` is in autocommit mode; `task` and `what` name the migration and the step for the log and the error."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{LOCK_TIMEOUT_MS}ms",))
                return step()
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            log.info("%s: %s: table busy (attempt %d), trying again", task, what, attempt)
            time.sleep(min(1.0, 0.05 * attempt))
    raise OnlineMigrationError(f"{task}: could not {what} in {ATTEMPTS} attempts (a long transaction holds the "
                               "table?); nothing changed for readers, run the migration again")
