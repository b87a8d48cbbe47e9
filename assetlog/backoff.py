"""The one backoff policy: exponential delays, capped, with jitter.

A leaf module (standard library only), so every stage can use it without
importing another: the consumers and replay (`consumers/retry.py` re-exports
`Backoff`), the producer's resends of undelivered outbox rows, the
integrations' retry loops.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Seconds before retry number `attempt` (0 for the first): initial * 2^attempt, capped at
    `maximum`, minus up to a quarter at random so processes that failed together do not
    retry together."""
    delay = min(maximum, initial * (2 ** min(attempt, 64)))
    return delay * random.uniform(0.75, 1.0)  # jitter, not security


@dataclass
class Backoff:
    """`backoff_delay` with its attempt counter, for a loop that retries until it succeeds."""

    initial: float = 0.1
    maximum: float = 5.0
    attempts: int = 0

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempts, self.initial, self.maximum)
        self.attempts += 1
        return delay

    def wait(self, stop: threading.Event) -> bool:
        """Sleep the next delay; False if `stop` was set meanwhile."""
        return not stop.wait(self.next_delay())

    def reset(self) -> None:
        self.attempts = 0
