"""Exponential backoff, and which failures are worth waiting out.

PostgreSQL restarting, a dropped connection, a deadlock between two consumer
processes or Kafka not acknowledging a dead letter all pass; waiting and
retrying the same batch is safe because nothing of it was committed. Anything
else (a missing table, a bug) is raised to the caller at once.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import psycopg

from assetlog.consumers.dead_letters import DeadLetterError

RETRYABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # connection refused or lost, admin shutdown, cannot connect now, ...
    psycopg.errors.TransactionRollback,  # deadlock detected, serialization failure
    DeadLetterError,
)


@dataclass
class Backoff:
    """Delays of initial * 2^n seconds, capped, with jitter so restarted consumers do not stampede."""

    initial: float = 0.1
    maximum: float = 5.0
    attempts: int = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * (2 ** self.attempts))
        self.attempts += 1
        return delay * random.uniform(0.75, 1.0)  # jitter, not security

    def wait(self, stop: threading.Event) -> bool:
        """Sleep the next delay; False if `stop` was set meanwhile."""
        return not stop.wait(self.next_delay())

    def reset(self) -> None:
        self.attempts = 0
