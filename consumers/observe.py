"""What a committed batch tells the outside world: Prometheus metrics.

Called after a batch's PostgreSQL transaction committed, never before, so the
numbers only ever count what is durable. The copy of the offsets in Kafka, for
the lag tools operators already run, is `offset_mirror.py`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from confluent_kafka import KafkaException, TopicPartition

from assetlog.consumers.batch import Batch
from assetlog.consumers.kafka_consumer import metadata_consumer
from assetlog.metrics import (
    BATCH_DURATION,
    BATCH_SIZE,
    COMMIT_DURATION,
    DEAD_LETTERS,
    EVENTS_PROJECTED,
    LAG,
    LAST_COMMIT,
)

log = logging.getLogger("assetlog.consumers")


def record_commit(projection: str, batch: Batch, commit_seconds: float) -> None:
    """Count a committed batch (on the committer thread, right after its transaction)."""
    for topic, count in Counter(event.position.topic for event in batch.events if event.position).items():
        EVENTS_PROJECTED.labels(projection=projection, topic=topic).inc(count)
    for (topic, reason), count in Counter((letter.position.topic, letter.reason)
                                          for letter in batch.dead_letters).items():
        DEAD_LETTERS.labels(projection=projection, topic=topic, reason=reason).inc(count)
    BATCH_SIZE.labels(projection=projection).observe(batch.messages)
    COMMIT_DURATION.labels(projection=projection).observe(commit_seconds)
    BATCH_DURATION.labels(projection=projection).observe(time.monotonic() - batch.received_at)
    LAST_COMMIT.labels(projection=projection).set(time.time())


def mirror_offsets(projection: str, consumer, offsets: dict[tuple[str, int], int]) -> None:
    """Set the lag of the offsets PostgreSQL committed from the watermarks the consumer already knows.
    On the consumer's own thread: a confluent-kafka consumer is not shared between threads."""

    if not offsets:
        return
    for (topic, partition), offset in offsets.items():
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            continue
        if high >= offset:
            LAG.labels(projection=projection, topic=topic, partition=str(partition)).set(high - offset)
    # Never committed by this consumer to its own group: after a broker restart the broker answers a
    # static member's OffsetCommit with FENCED_INSTANCE_ID, fatal in librdkafka (the broker-outage drill
    # caught it). `OffsetMirror` copies the offsets to `<group>.lag` from a client outside the group.


def record_at_end(projection: str, topic: str, partition: int) -> None:
    """A partition reached its end: nothing left to project there."""
    LAG.labels(projection=projection, topic=topic, partition=str(partition)).set(0)


class LagWatcher:
    """Keeps `assetlog_consumer_lag_messages` current even while no batch commits.

    Lag measured only at commit time would freeze exactly when it matters: a
    consumer stuck on PostgreSQL, or starved, commits nothing. So a thread asks
    the broker for the end of each partition this process holds every
    `interval` seconds and subtracts the position last committed to PostgreSQL.
    """

    def __init__(self, projection: str, settings, interval: float = 5.0) -> None:
        self.projection = projection
        # A handle of its own: the consuming one is busy in consume() and may not be shared.
        self._consumer, _ = metadata_consumer(settings, f"{projection}.watermarks")
        self._interval = interval
        self._positions: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assetlog-lag", daemon=True)
        self._thread.start()

    def track(self, positions: dict[tuple[str, int], int]) -> None:
        """Positions now stored in PostgreSQL (after an assignment or a commit)."""
        with self._lock:
            self._positions.update(positions)

    def forget(self, partitions) -> None:
        with self._lock:
            for topic, partition in partitions:
                self._positions.pop((topic, partition), None)
                try:
                    LAG.remove(self.projection, topic, str(partition))
                except KeyError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                positions = dict(self._positions)
            for (topic, partition), position in positions.items():
                try:
                    _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=2,
                                                                   cached=False)
                except (KafkaException, RuntimeError):  # broker away or consumer closing: try next time
                    continue
                LAG.labels(projection=self.projection, topic=topic, partition=str(partition)).set(
                    max(0, high - position))
