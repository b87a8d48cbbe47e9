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

import psycopg

from assetlog.backoff import Backoff
from assetlog.consumers.dead_letters import DeadLetterError
from assetlog.projections.base import RefusedEvent

__all__ = ["DATA_ERRORS", "RETRYABLE", "Backoff", "retryable"]  # Backoff lives in assetlog.backoff (one policy)

RETRYABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection refused or lost, admin shutdown, lock timeout, cannot connect now, ...
    psycopg.errors.TransactionRollback,  # deadlock detected, serialization failure
    DeadLetterError,
)

# Failures of one event's content, in the database or while adapting a value for it: never temporary.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,  # class 22: NUL in text, invalid escapes in jsonb, untranslatable characters, out of range
    psycopg.IntegrityError,  # class 23: a row a constraint refuses
    psycopg.errors.ProgramLimitExceeded,  # class 54: index row too large, statement too complex (deep JSON)
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
