"""Notice a Kafka client that has forgotten every broker, so its owner can replace it.

The one home of that rule for every long-lived client: the consumers' group
members (`consumers/runner.py`), their dead-letter producer
(`consumers/dead_letters.py`), their offset copy for lag tools
(`consumers/offset_mirror.py`) and the producer SDK's publisher
(`producer/delivery.py`). It lives here, below both sides, so the producer
never imports the consumers.

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
takes the same risk at the same moment. A producer's client shares the same
metadata code, so a publisher or dead-letter producer can be left the same way.
The race itself, as we read librdkafka's source: the re-bootstrap drops the
brokers and adds the bootstrap address; if the client learns the broker back while it still knows that address
(a consumer's group coordinator lookup does), one answer listing no broker makes
it forget both. `tests/test_fault_librdkafka_wedge.py` leaves real clients so on
purpose, through a proxy that gives that answer.

The client's own statistics name the state: no broker whose source is
"configured" or "learned" (a consumer keeps only the logical group coordinator,
a producer nothing). `NoBrokerWatch` is the statistics callback; once that
state has lasted `grace` seconds, `wedged()` says so and the owner builds a new
client: the runner a new consumer (its static membership gets the same
partitions back at once, from the offsets in PostgreSQL), the publisher and the
dead-letter producer a new producer (what the old one had not delivered is sent
again by the new one). The same statistics name the client's state in one line
when a consumer has received nothing for a while (`quiet_report`), so a stall
of another kind is named in the log the next time it happens.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

STATS_INTERVAL_MS = 5000  # librdkafka's `statistics.interval.ms` for a watched client (0 turns the watch off)
GRACE_SECONDS = 15.0  # how long a client may know no broker before it is replaced (a re-bootstrap takes ms)
_REAL_SOURCES = ("configured", "learned")  # not "logical" (the group coordinator) nor "internal"
IDLE_REPORT_SECONDS = 60.0  # nothing received this long: the client's state is logged once (INFO)


def knows_a_broker(brokers: Mapping[str, Any]) -> bool:
    """Whether librdkafka's statistics `brokers` section lists a broker it can connect to."""
    return any(isinstance(b, Mapping) and b.get("source") in _REAL_SOURCES for b in brokers.values())


def describe(stats: Mapping[str, Any] | None) -> str:
    """librdkafka's statistics in one line: group state, brokers, assigned partitions by fetch state."""
    if not stats:
        return "no statistics yet"
    try:
        return _describe(stats)
    except (AttributeError, TypeError):  # a shape this librdkafka version does not give: say so, never raise
        return "statistics not understood"


def _describe(stats: Mapping[str, Any]) -> str:
    group = stats.get("cgrp") or {}
    brokers = [f"{name} {b.get('state')}" for name, b in (stats.get("brokers") or {}).items()
               if isinstance(b, Mapping) and b.get("source") in _REAL_SOURCES]
    states = Counter(p.get("fetch_state") for topic in (stats.get("topics") or {}).values()
                     for number, p in (topic.get("partitions") or {}).items() if number != "-1" and p.get("desired"))
    return (f"group {group.get('state', '?')}/{group.get('join_state', '?')}; "
            f"brokers: {', '.join(brokers) or 'none known'}; "
            f"partitions: {', '.join(f'{n} {state}' for state, n in sorted(states.items())) or 'none assigned'}")


class NoBrokerWatch:
    """librdkafka's `stats_cb`: remembers since when the client has known no broker."""

    def __init__(self, grace: float = GRACE_SECONDS, clock: Callable[[], float] = time.monotonic,
                 idle_report: float = IDLE_REPORT_SECONDS) -> None:
        self.grace = grace
        self.idle_report = idle_report
        self.latest: dict[str, Any] | None = None  # the last statistics, parsed
        self._clock = clock
        self._since: float | None = None
        self._received_at = clock()
        self._reported = False

    def __call__(self, stats: str) -> None:
        try:
            parsed = json.loads(stats)
        except ValueError:
            return
        brokers = parsed.get("brokers", {}) if isinstance(parsed, dict) else None
        if not isinstance(brokers, Mapping):  # not statistics we understand: say nothing (never raise in
            return                            # librdkafka's callback: it would surface from consume())
        self.latest = parsed
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
        self.latest = None

    def quiet_report(self, received: bool) -> str | None:
        """Called after each `consume()`: once `idle_report` seconds pass with nothing received, the
        client's state in one line (once per quiet spell); None otherwise."""
        now = self._clock()
        if received:
            self._received_at, self._reported = now, False
            return None
        if self._reported or now - self._received_at < self.idle_report:
            return None
        self._reported = True
        return describe(self.latest)
