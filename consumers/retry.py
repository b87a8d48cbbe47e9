"""Exponential backoff, and which failures are worth waiting out.

PostgreSQL restarting, a dropped connection, a deadlock or serialization
failure between two consumer processes, a lock timeout or Kafka not
acknowledging a dead letter all pass; waiting and retrying the same batch is
safe because nothing of it was committed.

A failure caused by what an event holds never passes, however often the batch
is retried: those are `DATA_ERRORS`, which the tracked writer answers by
finding the event(s) at fault and dead-lettering them (`tracked_writer.py`).
PostgreSQL files "program limit exceeded" (an index row too large, JSON nested
too deeply) under the same class as connection failures, so `retryable` must
be asked, not `isinstance(exc, RETRYABLE)` alone. Anything else (a missing
table, a bug) is raised to the caller at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from assetlog.backoff import Backoff
from assetlog.consumers.dead_letters import DeadLetterError
from assetlog.projections.base import RefusedEvent

__all__ = ["DATA_ERRORS", "RETRYABLE", "Backoff", "RetryingConnection", "Stopped", "retryable"]
# (Backoff lives in assetlog.backoff: one policy.)

Result = TypeVar("Result")

RETRYABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection refused or lost, admin shutdown, lock timeout, cannot connect now, ...
    psycopg.errors.TransactionRollback,  # deadlock detected, serialization failure
    DeadLetterError,
)

# Failures of one event's content, in the database or while adapting a value for it: never temporary.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,  # class 22: NUL in text, invalid escapes in jsonb, untranslatable characters, out of range
    psycopg.IntegrityError,  # class 23: a row a constraint refuses
    # Class 54, every member: psycopg makes them siblings under OperationalError, not subclasses of
    # ProgramLimitExceeded, so each is named (an index row too large; JSON nested too deeply for the
    # server's stack; too many columns or arguments).
    psycopg.errors.ProgramLimitExceeded,
    psycopg.errors.StatementTooComplex,
    psycopg.errors.TooManyColumns,
    psycopg.errors.TooManyArguments,
    UnicodeError,  # raised by psycopg's adapters on the client side: a string it cannot encode
    OverflowError,  # a number too large for its column's type, refused before it is sent
    RecursionError,  # a value nested too deeply to serialise
    RefusedEvent,  # the projection's own refusal (an event id stored with another time)
)
# Not TypeError or any other ValueError: those are bugs, which must stop the consumer loudly rather
# than dead-letter every event of the batch.


def retryable(exc: BaseException) -> bool:
    """Infrastructure failures only: a data error is never temporary, even where PostgreSQL classes it
    with connection failures."""
    return isinstance(exc, RETRYABLE) and not isinstance(exc, DATA_ERRORS)


class Stopped(Exception):
    """Asked to stop while waiting out a failure (the batch in hand was not committed)."""


class RetryingConnection:
    """A worker's one PostgreSQL connection, opened on first use and again after a failure, whose
    transactions are retried with backoff while the failure is transient (`retryable`).

    One home for the loop the live consumer and the replay's shadow writers share: a failure of
    the connection drops it (the next attempt connects afresh); a deadlock keeps it; anything not
    retryable, a data error included, is raised at once for the caller to handle.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], backoff: Backoff, stop: threading.Event,
                 log: logging.Logger, label: str, stats: Any) -> None:
        self._connect = connect
        self.backoff = backoff
        self._stop = stop
        self._log = log
        self._label = label
        self._stats = stats  # the owner's run statistics: their `retries` counts each retry
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def transaction(self, work: Callable[[psycopg.Connection], Result], what: str) -> Result:
        """`work(conn)` in one transaction, retried while the failure is transient; Stopped when asked
        to stop while waiting."""
        self.backoff.reset()
        while True:
            try:
                conn = self.connection()
                with conn.transaction():
                    return work(conn)
            except RETRYABLE as exc:
                if not retryable(exc):
                    raise
                if isinstance(exc, psycopg.Error):
                    self.close()
                self._stats.retries += 1
                self._log.warning("%s: cannot %s (%s); retry %d with backoff", self._label, what,
                                  str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                                  self.backoff.attempts + 1)
                if not self.backoff.wait(self._stop):
                    raise Stopped from exc

    def close(self) -> None:
        """Close the connection (a broken one too: nothing of it can be saved)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken
                pass
            self._conn = None
