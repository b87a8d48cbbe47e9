"""Notice a Kafka client that has forgotten every broker, so the runner can replace it.

librdkafka (2.10 and later) drops ("decommissions") the brokers that a Metadata
answer does not list, and re-bootstraps from `bootstrap.servers` when every
broker it knows is down. Around a broker restart the two race. A broker in
controlled shutdown is fenced a few milliseconds before it stops answering, and
in that window it answers Metadata with its topics and no broker at all
(measured on Kafka 4.1, asking every 5 ms: such answers in 2 of 3 shutdowns);
the client then drops its brokers, and the re-bootstrap that should bring them
back meets a broker that is going down or still starting. Usually it recovers;
now and then it ends with no broker at all, and then nothing reconnects it:
no broker is left to go down (the re-bootstrap trigger) and no metadata request
is made that would start the re-bootstrap timer. The consumer stays alive,
keeps its assignment and never fetches again. Reproduced with librdkafka 2.16.0
and a plain consumer refreshing metadata every 10 ms: 1 broker restart in 31
left it so (statistics: only the logical group coordinator; nothing fetched 20 s
later). librdkafka has open and recent fixes in this area (issues 5301, 5088,
5605). Consumers refresh metadata as soon as a partition's leader goes away,
which is exactly when a broker shuts down, so every consumer of that broker
takes the same risk at the same moment.

The client's own statistics name the state: no broker whose source is
"configured" or "learned" (only the logical group coordinator is left).
`NoBrokerWatch` is the statistics callback; once that state has lasted `grace`
seconds, `wedged()` says so and the runner builds a new consumer (its static
membership gets the same partitions back at once, from the offsets in
PostgreSQL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

STATS_INTERVAL_MS = 5000  # librdkafka's `statistics.interval.ms` for the group consumers (0 turns the watch off)
GRACE_SECONDS = 15.0  # how long a client may know no broker before it is replaced (a re-bootstrap takes ms)
_REAL_SOURCES = ("configured", "learned")  # not "logical" (the group coordinator) nor "internal"


def knows_a_broker(brokers: Mapping[str, Any]) -> bool:
    """Whether librdkafka's statistics `brokers` section lists a broker it can connect to."""
    return any(isinstance(b, Mapping) and b.get("source") in _REAL_SOURCES for b in brokers.values())


class NoBrokerWatch:
    """librdkafka's `stats_cb`: remembers since when the client has known no broker."""

    def __init__(self, grace: float = GRACE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self._clock = clock
        self._since: float | None = None

    def __call__(self, stats: str) -> None:
        try:
            brokers = json.loads(stats).get("brokers", {})
        except (ValueError, AttributeError):  # not statistics we understand: say nothing
            return
        if knows_a_broker(brokers):
            self._since = None
        elif self._since is None:
            self._since = self._clock()

    def wedged(self) -> bool:
        """The client has known no broker for `grace` seconds."""
        return self._since is not None and self._clock() - self._since >= self.grace

    def reset(self) -> None:
        """A new client replaced the wedged one."""
        self._since = None
