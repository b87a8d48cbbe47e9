"""Kafka's own record of where each projection stands, for the lag tools operators already run.

PostgreSQL holds the offsets that count (stored with the rows, in the same
transaction); a copy in Kafka only lets `kafka-consumer-groups --describe`,
Burrow or a Kafka lag exporter see Assetlog's consumers. The copy is written
to the group `<group>.lag` (for the `lineage` projection under the default
prefix: `assetlog.lineage.lag`), never to the consuming group itself:

- the broker refuses an offset commit from outside the group while it has
  members (UNKNOWN_MEMBER_ID), and
- a commit by the member itself was tried before: after a broker restart the
  broker answers a static member's OffsetCommit with FENCED_INSTANCE_ID, which
  librdkafka makes fatal for the whole consumer.

So a separate consumer, which never subscribes and so never joins any group,
commits the copy (a "simple" commit, which the broker accepts for a group with
no members), asynchronously, on a thread of its own, at most once per
`interval`, with only the newest offsets. (Kafka's admin API,
`alter_consumer_group_offsets`, does the same, but librdkafka 2.x aborted the
whole process on an assertion when such a request timed out during the
broker-outage drill.) Whatever goes wrong is logged and counted
(`assetlog_consumer_offset_mirror_failures_total`), never raised: monitoring
must not stop a consumer.

Its client is watched like every long-lived one (`assetlog/broker_watch.py`):
one left knowing no broker after a broker restart would fail every commit for
as long as the consumer runs, so after the grace time it is replaced, and the
newest offsets it was given are copied by the new one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from assetlog.broker_watch import NoBrokerWatch
from assetlog.config import Settings
from assetlog.consumers.kafka_consumer import commit_only_consumer
from assetlog.metrics import OFFSET_MIRROR_FAILURES

log = logging.getLogger("assetlog.consumers")

MONITORING_SUFFIX = ".lag"


def monitoring_group(group_id: str) -> str:
    """The Kafka group holding the copy of `group_id`'s offsets (it never has members)."""
    return group_id + MONITORING_SUFFIX


class OffsetMirror:
    """Copies committed offsets to `<group>.lag` in the background, throttled; never raises."""

    def __init__(self, settings: Settings, group_id: str, projection: str, interval: float = 1.0) -> None:
        self.group = monitoring_group(group_id)
        self.projection = projection
        self._interval = interval
        self._settings = settings
        self.brokers = NoBrokerWatch()  # librdkafka's statistics: does the client still know a broker?
        self.reconnects = 0  # times a client that knew no broker was replaced
        self._consumer = commit_only_consumer(settings, self.group, self._on_commit, stats_cb=self.brokers)
        self._pending: dict[tuple[str, int], int] = {}
        self._newest: dict[tuple[str, int], int] = {}  # every partition's newest offset tracked (for a new client)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failing = False
        self._unanswered = 0  # commits sent whose callback has not run yet
        self._thread = threading.Thread(target=self._run, name="assetlog-offset-mirror", daemon=True)
        self._thread.start()

    def track(self, offsets: dict[tuple[str, int], int]) -> None:
        """Offsets just committed to PostgreSQL (cheap: the copy is written later, on the mirror's thread)."""
        with self._lock:
            self._pending.update(offsets)
            self._newest.update(offsets)

    def close(self, timeout: float = 2.0) -> None:
        """Commit what is pending once more and wait for the answers, at most `timeout` (a broker away
        does not hold up the exit: the copy is only for monitoring), then stop.

        `poll()` returns early for messages only, never for a commit's callback, so it is called in
        short slices until every commit sent has been answered: a bare `poll(timeout)` made every
        consumer's exit take the whole `timeout`.
        """
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)
        try:
            self._commit()
            deadline = time.monotonic() + timeout
            while self._unanswered and time.monotonic() < deadline:
                self._consumer.poll(0.02)  # serves the commits' callbacks
            self._consumer.close()
        except RuntimeError:  # closed already
            pass

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._consumer.poll(0)  # serves the callbacks of earlier commits, and the statistics
            if self.brokers.wedged():
                self._replace()
            self._commit()

    def _replace(self) -> None:
        """The client has known no broker for the grace time and will not reconnect: close it and copy
        the newest offsets with a new one (the old one's commits in flight are never answered)."""
        log.warning("%s: the client copying offsets to Kafka group %s has known no broker for %.0fs "
                    "(librdkafka dropped them all around a broker restart); replacing it", self.projection,
                    self.group, self.brokers.grace)
        try:
            new = commit_only_consumer(self._settings, self.group, self._on_commit, stats_cb=self.brokers)
        except Exception as exc:  # never raised: monitoring must not stop a consumer; tried again next round
            OFFSET_MIRROR_FAILURES.labels(projection=self.projection).inc()
            log.warning("%s: could not build a new client to copy offsets to Kafka group %s: %s", self.projection,
                        self.group, exc)
            return
        old, self._consumer = self._consumer, new
        try:
            old.close()  # reaches no broker: nothing to leave
        except Exception as exc:  # a wedged client may fail to close; it is dropped anyway
            log.debug("closing the wedged offset-copy client failed: %s", exc)
        self.brokers.reset()
        self.reconnects += 1
        self._unanswered = 0
        with self._lock:
            self._pending = dict(self._newest)  # every partition, at the newest offset it was given

    def _commit(self) -> None:
        with self._lock:
            offsets, self._pending = self._pending, {}
        if not offsets:
            return
        partitions = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            self._consumer.commit(offsets=partitions, asynchronous=True)
            self._unanswered += 1
        except KafkaException as exc:
            self._failed(partitions, str(exc.args[0]))

    def _on_commit(self, error: Any, partitions: list[Any]) -> None:
        self._unanswered -= 1  # callbacks run inside poll(), on the thread that commits: no lock needed
        failed = [tp for tp in partitions if tp.error is not None]
        if error is not None or failed:
            self._failed(failed or partitions, str(error or failed[0].error))
            return
        if self._failing:
            log.info("%s: offsets copied to Kafka group %s again", self.projection, self.group)
        self._failing = False

    def _failed(self, partitions: list[Any], problem: str) -> None:
        OFFSET_MIRROR_FAILURES.labels(projection=self.projection).inc()
        with self._lock:  # tried again next time, unless a newer offset arrived meanwhile
            for tp in partitions:
                self._pending.setdefault((tp.topic, tp.partition), tp.offset)
        if not self._failing:  # one warning per spell of failures, not one per second
            log.warning("%s: could not copy the offsets to Kafka group %s (monitoring only; PostgreSQL has "
                        "them): %s", self.projection, self.group, problem)
        self._failing = True
