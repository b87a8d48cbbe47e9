"""Read the event topics between fixed offsets into shadow projections.

A replay must know exactly which events its shadow tables hold: it reads
each partition from a start offset up to a target offset captured
beforehand, never beyond (a message past the target is dropped and read again
by the next round), so that the offsets it stores, and that the live consumer
continues from after a swap, are exact. Each projection writes on its own
connection and committer thread: `replay all` loads both projections in two
PostgreSQL backends at once, from one read and one decode of the topics.

No consumer group: partitions are assigned by hand, nothing is committed to
Kafka, and nothing is copied to the dead-letter topics (the live consumers
did that already); dead letters are recorded in the shadow's own table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from assetlog.config import Settings
from assetlog.consumers.batch import Batch, build_batch, event_types_by_topic, events_of, reduce_isolating
from assetlog.consumers.committer import BackgroundCommitter
from assetlog.consumers.kafka_consumer import event_consumer
from assetlog.consumers.offsets import OffsetStore
from assetlog.consumers.progress import Progress
from assetlog.consumers.retry import Backoff, RetryingConnection, Stopped
from assetlog.consumers.tracked_writer import TrackedWriter
from assetlog.errors import AssetlogError
from assetlog.projections import projection_by_name

log = logging.getLogger("assetlog.replay")

Partition = tuple[str, int]
Offsets = dict[Partition, int]


@dataclass
class WriterStats:
    messages: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    retries: int = 0


# Events folded into one shadow transaction per projection: current properties collapse to a row per
# key (fewer, bigger upserts: folds of 200,000 halved the properties writers' PostgreSQL CPU against
# 50,000 in a 1M-event replay), while the history's rows are all kept, so a bigger fold saves it nothing
# (folds of 50,000 cost PostgreSQL as much as 10,000). Measured in bench/README.md (P3, second pass).
# A fold keeps its messages until it commits (about 0.4 kB each).
COALESCE_EVENTS = {"properties": 200_000, "lineage": 10_000}
# Batches waiting per writer: the reader keeps decoding while a writer folds or flushes a big batch.
QUEUE_DEPTH = 4


class ShadowWriter:
    """Applies batches to one shadow projection, with its offsets, on a thread of its own.

    Consecutive batches are folded together (`reduce(..., into=...)`) up to a
    budget of events, then written in one transaction: unlike a live consumer,
    a replay has no reader waiting for each batch. A batch without messages
    (the end of a round) writes whatever is folded so far. The fold keeps the
    messages (not the decoded events) so that an event the database refuses can
    be found and dead-lettered exactly as a live consumer does (`TrackedWriter`).
    """

    def __init__(self, dsn: str, projection: Any, stop: threading.Event, backoff: Backoff | None = None,
                 coalesce: int | None = None) -> None:
        self.dsn = dsn
        self.projection = projection
        self.offsets = OffsetStore(projection.name, projection.schema)
        self.writer = TrackedWriter(projection, self.offsets)
        self.coalesce = coalesce if coalesce is not None else COALESCE_EVENTS.get(projection.name, 5000)
        self.stats = WriterStats()
        self._postgres = RetryingConnection(self._connect, backoff or Backoff(), stop, log,
                                            f"replay {projection.name}", self.stats)
        self._fold = Batch()  # messages, dead letters and offsets of the batches folded so far
        self._effects: Any = None  # their effects
        self._folded_events = 0
        self._committer: BackgroundCommitter[Batch] = BackgroundCommitter(self._commit, depth=QUEUE_DEPTH)

    def submit(self, batch: Batch) -> None:
        self._committer.submit(batch)

    def drain(self) -> None:
        self._committer.drain()

    def raise_if_failed(self) -> None:
        self._committer.raise_if_failed()

    def close(self) -> None:
        self._committer.close()
        self._postgres.close()

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, application_name=f"assetlog.replay.{self.projection.name}")
        # The shadow can always be rebuilt: do not wait for the WAL flush at each batch.
        conn.execute("SET synchronous_commit = off")
        conn.commit()
        return conn

    def _commit(self, batch: Batch) -> None:
        fold = self._fold
        if batch.source:
            fold.expected_types = batch.expected_types
            fold.source.extend(batch.source)
        fold.messages += batch.messages
        fold.dead_letters.extend(batch.dead_letters)
        for tp, offset in batch.next_offsets.items():
            if offset > fold.next_offsets.get(tp, -1):
                fold.next_offsets[tp] = offset
        try:
            self._effects = self.projection.reduce(batch.events, into=self._effects)
            self._folded_events += len(batch.events)
        except Exception:
            kept = reduce_isolating(self.projection, fold, events_of(fold))
            self._effects, self._folded_events = fold.effects, len(kept)
        if batch.messages and self._folded_events < self.coalesce:
            return
        fold.effects = self._effects if self._effects is not None else self.projection.reduce([])
        self._write(fold)
        self._fold, self._effects, self._folded_events = Batch(), None, 0

    def _write(self, fold: Batch) -> None:
        events = self._folded_events
        dead_letters = len(fold.dead_letters)
        try:
            # nothing copied to the dead-letter topics (see above)
            self._postgres.transaction(lambda conn: self.writer.write(conn, fold), "write a batch")
        except Stopped as stopped:
            raise AssetlogError("replay stopped while PostgreSQL was unreachable") from stopped.__cause__
        stats = self.stats
        stats.batches += 1
        stats.messages += fold.messages
        stats.events += events - (len(fold.dead_letters) - dead_letters)  # less those found unstorable
        stats.dead_letters += len(fold.dead_letters)


def lag(positions: Mapping[str, Offsets], targets: Mapping[str, Offsets]) -> int:
    """Messages still to apply to reach `targets` (per projection name), summed over projections."""
    return sum(max(0, target - positions[name].get(tp, 0))
               for name, offsets in targets.items() for tp, target in offsets.items())


def _restrict(rows: list[tuple[str, int, int, Any, Any]], low: Offsets, high: Offsets,
              expected: Mapping[str, str]) -> Batch:
    """The part of a batch a projection must apply: offsets in [low, high) of each partition."""
    return build_batch([r for r in rows if low.get((r[0], r[1]), 0) <= r[2] < high.get((r[0], r[1]), 0)], expected)


class ShadowReader:
    """Brings shadow projections from their positions up to target offsets, round after round."""

    def __init__(self, settings: Settings, names: list[str], schema: str, start: Offsets, *,
                 batch_size: int = 5000, batch_timeout: float = 0.05, progress: Progress | None = None) -> None:
        self.settings = settings
        self._stop = threading.Event()
        dsn = settings.require_postgres()
        self.writers = [ShadowWriter(dsn, projection_by_name(name, schema), self._stop) for name in names]
        # Next offset each projection has yet to apply, per partition.
        self.positions: dict[str, Offsets] = {name: dict(start) for name in names}
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.progress = progress or Progress("replay", "off")
        self.expected = event_types_by_topic(settings.topics)
        self._consumer = self._new_consumer()

    def writer_stats(self) -> dict[str, WriterStats]:
        return {w.projection.name: w.stats for w in self.writers}

    def _new_consumer(self):
        return event_consumer(
            self.settings,
            f"{self.settings.topic_prefix}.replay",  # never joined: partitions assigned by hand
            auto_offset_reset="error",  # a start offset that is gone must fail, not skip events
            defaults={"fetch.max.bytes": 32 * 1024 * 1024, "queued.max.messages.kbytes": 32 * 1024,
                      "max.partition.fetch.bytes": 8 * 1024 * 1024})

    def close(self) -> None:
        """Give up any retry in progress, stop the writers, leave Kafka."""
        self._stop.set()
        for writer in self.writers:
            writer.close()
        self._consumer.close()

    def lag(self, targets: Mapping[str, Offsets]) -> int:
        return lag(self.positions, targets)

    def read_to(self, targets: Mapping[str, Offsets], stopping: Callable[[], bool] = lambda: False, *,
                bulk: bool = False) -> None:
        """Apply every message below `targets[projection][partition]` and store the targets as the
        shadow's offsets; returns once every writer committed. With `bulk` (a replay's first read),
        projections that derive a table once loaded (the lineage's edges) leave it out meanwhile."""

        names = [w.projection.name for w in self.writers]
        for writer in self.writers:  # the writers drained at the end of the last round: no batch in flight
            if hasattr(writer.projection, "edges_later"):
                writer.projection.edges_later = bulk
        wanted: set[Partition] = set()
        for name in names:
            for tp, target in targets[name].items():
                if self.positions[name].get(tp, 0) < target:
                    wanted.add(tp)
        self.progress.expect(sum(max(0, max(targets[n].get(tp, 0) for n in names)
                                     - min(self.positions[n].get(tp, 0) for n in names)) for tp in wanted))
        end = {tp: max(targets[n].get(tp, 0) for n in names) for tp in wanted}
        begin = {tp: min(self.positions[n].get(tp, 0) for n in names) for tp in wanted}
        # Projections whose window is [begin, end) of every partition read: every message read is theirs, so
        # `_submit` skips its offset check for them (every projection of a replay; 3% of a worker's CPU).
        whole = {n for n in names if all(self.positions[n].get(tp, 0) == begin[tp] and targets[n].get(tp, 0) == end[tp]
                                         for tp in wanted)}
        if wanted:
            self._consumer.assign([TopicPartition(t, p, begin[(t, p)]) for t, p in sorted(wanted)])
        pending = set(wanted)
        while pending:
            if stopping():
                raise KeyboardInterrupt
            for writer in self.writers:
                writer.raise_if_failed()
            rows = []
            for message in self._consumer.consume(num_messages=self.batch_size, timeout=self.batch_timeout):
                tp = (message.topic(), message.partition())
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if tp in pending and message.offset() < end[tp]:
                            raise AssetlogError(
                                f"{tp[0]}[{tp[1]}] ends at offset {message.offset()}, before offset {end[tp]} "
                                "that the replay must reach (was the topic deleted and created again?)")
                        pending.discard(tp)
                        continue
                    if error.code() == KafkaError._AUTO_OFFSET_RESET:
                        raise AssetlogError(f"events are gone from {tp[0]}[{tp[1]}] (retention or deletion): "
                                            f"a replay cannot rebuild the tables from it ({error.str()})")
                    if error.fatal():
                        raise KafkaException(error)
                    log.warning("Kafka: %s", error)
                    continue
                if tp not in pending:
                    continue
                offset = message.offset()
                if offset >= end[tp]:
                    pending.discard(tp)  # read again, from here, by the next round
                    continue
                rows.append((tp[0], tp[1], offset, message.key(), message.value()))
                if offset + 1 >= end[tp]:
                    pending.discard(tp)
            if rows:
                self._submit(rows, targets, whole)
                self.progress.advance(len(rows))
        for writer in self.writers:
            name = writer.projection.name
            reached = {tp: max(self.positions[name].get(tp, 0), target) for tp, target in targets[name].items()}
            writer.submit(Batch(next_offsets=reached))  # offsets past any gap (e.g. transaction markers)
        for writer in self.writers:
            writer.drain()
        for writer in self.writers:
            name = writer.projection.name
            for tp, target in targets[name].items():
                self.positions[name][tp] = max(self.positions[name].get(tp, 0), target)

    def _submit(self, rows: list[tuple[str, int, int, Any, Any]], targets: Mapping[str, Offsets],
                whole: set[str]) -> None:
        shared: Batch | None = None
        for writer in self.writers:
            name = writer.projection.name
            low, high = self.positions[name], targets[name]
            inside = name in whole or all(low.get((t, p), 0) <= o < high.get((t, p), 0) for t, p, o, _k, _v in rows)
            if inside:
                if shared is None:
                    shared = build_batch(rows, self.expected)
                writer.submit(shared)
            else:  # projections compared at different offsets (replay --check all while consumers run)
                writer.submit(_restrict(rows, low, high, self.expected))
