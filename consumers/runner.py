"""Run a projection from Kafka into PostgreSQL, exactly once in effect.

The runner owns everything the projection must not know: the Kafka consumer
(group `<prefix>.<projection>`, auto-commit off; built by `kafka_consumer.py`), batching, the offsets kept
in PostgreSQL, dead letters, retries and stopping. Each batch is one
transaction holding the projection's writes, the dead-letter rows and the new
offsets; on partition assignment the consumer seeks to the stored offsets. So
a crash at any instant resumes after the last committed batch, and since every
projection merge is idempotent, a batch applied twice (a zombie after a
rebalance, a producer's duplicate) changes nothing either.

A replay (`assetlog replay`) may swap the tables and the stored offsets under a
running consumer: each batch transaction first checks the projection's
generation (`fencing.py`), and a batch read before a swap is dropped, not
committed; the runner then seeks to the offsets the replay stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from psycopg import conninfo

from assetlog.broker_watch import NoBrokerWatch
from assetlog.config import Settings, Topics
from assetlog.consumers.batch import (
    Batch,
    build_batch,
    event_types_by_topic,
    reduce_isolating,
    tune_interpreter,
)
from assetlog.consumers.committer import BackgroundCommitter
from assetlog.consumers.dead_letters import DeadLetterPublisher
from assetlog.consumers.fencing import Fenced, GenerationFence
from assetlog.consumers.kafka_consumer import group_consumer
from assetlog.consumers.membership import Slot, leave_group
from assetlog.consumers.observe import LagWatcher, mirror_offsets, record_at_end, record_commit
from assetlog.consumers.offset_mirror import OffsetMirror
from assetlog.consumers.offsets import OffsetStore
from assetlog.consumers.retry import Backoff, RetryingConnection, Stopped
from assetlog.consumers.run_stats import RunStats
from assetlog.consumers.tracked_writer import TrackedWriter
from assetlog.projections import projection_by_name, require_migrated
from assetlog.projections.base import Projection

log = logging.getLogger("assetlog.consumers")

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_BATCH_TIMEOUT", "ProjectionRunner", "RunStats", "Stopped",
           "run_until_caught_up", "tune_interpreter"]

# Most messages per batch. Under load a batch is what librdkafka has fetched, up to this; at a low rate
# the timeout cuts it short, so the cap only matters when the consumer is behind. 20,000 rather than
# 5,000: the per-batch statements are paid a quarter as often, and the properties projection reduces a
# batch's events to one row per asset, so repeated assets cost one upsert (P2, 200k events on 20k
# assets: PostgreSQL 12.5-16.4 against 17-21 CPU-s per 1M events; bench/README.md, issue 15, sixth pass).
DEFAULT_BATCH_SIZE = 20_000
DEFAULT_BATCH_TIMEOUT = 0.05  # seconds: a batch is this many messages or this long, whichever first


class ProjectionRunner:
    """Consume the three event topics into one projection until caught up or stopped.

    `stop()` (thread-safe; the CLI calls it on SIGTERM/SIGINT) lets the batch
    in hand commit, then leaves the group at once (`close()`).
    """

    def __init__(
        self,
        projection: Projection | str,
        settings: Settings,
        *,
        until_caught_up: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
        group_id: str | None = None,
        offsets_key: str | None = None,
        backoff: Backoff | None = None,
        lag_interval: float | None = None,
    ) -> None:
        self.projection: Projection = (
            projection_by_name(projection) if isinstance(projection, str) else projection
        )
        self.settings = settings
        self.until_caught_up = until_caught_up
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.topics: Topics = settings.topics
        self.group_id = group_id or f"{settings.topic_prefix}.{self.projection.name}"
        self.offsets = OffsetStore(offsets_key or self.projection.name, getattr(self.projection, "schema", None))
        # Live tables are fenced against replay swaps; a projection writing into another schema is not live.
        live = getattr(self.projection, "schema", None) is None
        self.fence = GenerationFence(self.projection.name) if live else None
        self._generation = 0
        self.backoff = backoff or Backoff()
        self.expected_types = event_types_by_topic(self.topics)
        self.dead_letters = DeadLetterPublisher(settings, self.projection.name)
        self.writer = TrackedWriter(self.projection, self.offsets)
        self.stats = RunStats(self.projection.name, self.group_id)
        self._stop = threading.Event()
        self._postgres = RetryingConnection(self._connect, self.backoff, self._stop, log, self.projection.name,
                                            self.stats)
        self._assigned: set[tuple[str, int]] = set()
        self._assignment_known = False
        self._at_end: set[tuple[str, int]] = set()
        self._committed: queue.SimpleQueue[dict[tuple[str, int], int]] = queue.SimpleQueue()
        self._lag_interval = lag_interval  # seconds between lag measurements (None: only at commits)
        self._lag: LagWatcher | None = None
        self._mirror: OffsetMirror | None = None  # the copy of the offsets in Kafka, for lag tools
        self._slot: Slot | None = None  # the static-membership slot, held while running
        self.brokers = NoBrokerWatch()  # librdkafka's statistics: does the client still know a broker?
        self._kafka: Any = None  # the consumer in use (replaced if it forgets every broker)

    # --- lifecycle ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the runner to finish the batch in hand and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def assignment_known(self) -> bool:
        """The group has given this process its partitions (ready to project)."""
        return self._assignment_known

    @property
    def instance_id(self) -> str | None:
        """This process's `group.instance.id` (static membership), if it has one."""
        return self._slot.instance_id if self._slot else self.settings.kafka_settings.get("group.instance.id")

    @property
    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this process holds now (empty before the group assigned any)."""
        return sorted(self._assigned)

    def run(self) -> RunStats:
        started = time.monotonic()
        self._first_message_at: float | None = None
        self._last_commit_at: float | None = None
        self._committer = BackgroundCommitter(self._commit)
        try:
            # Waits for PostgreSQL like any batch would, but a missing schema fails at once, clearly.
            self._with_postgres(lambda conn: None, "connect to PostgreSQL")
            self._kafka = self._consumer()
            if self._lag_interval:
                self._lag = LagWatcher(self.projection.name, self.settings, self._lag_interval)
            if self.fence is not None:  # live tables only: their group is the one operators watch
                self._mirror = OffsetMirror(self.settings, self.group_id, self.projection.name)
            try:
                self._loop()
                self._settle()  # the batch in hand commits before the group is left
                self._last_commit_at = time.monotonic()
                self._mirror_committed(self._kafka)
            finally:
                if self._kafka is not None:  # None only if a replacement client could not be built
                    leave_group(self._kafka)  # now, so its partitions move to other members at once
        except Stopped:
            self.stats.stopped_by = "signal"
        finally:
            self._stop.set()  # on any way out, a batch still waiting for PostgreSQL gives up (uncommitted)
            self._committer.close()
            if self._lag is not None:
                self._lag.close()
            if self._mirror is not None:
                self._mirror.close()
            self.stats.dead_letter_reconnects = self.dead_letters.reconnects
            self.dead_letters.close()
            if self._slot is not None:
                self._slot.release()  # a restart of this slot may claim it now (its id stays readable)
            self._postgres.close()
            ended = time.monotonic()
            self.stats.seconds = ended - started
            # Throughput's time: leaving the group and closing the clients afterwards is not work done.
            done = self._last_commit_at or ended
            self.stats.busy_seconds = max(0.0, done - (self._first_message_at or done))
        return self.stats

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.brokers.wedged():
                    self._replace_client()
                if self._step(self._kafka):
                    return
            except Fenced as exc:
                self._resync(self._kafka, exc)
        self.stats.stopped_by = "signal"

    def _replace_client(self) -> None:
        """The Kafka client forgot every broker and will never fetch again (`broker_watch.py`): commit
        the batches in hand, close it and join the group with a new one in the same slot (the static
        member gets its partitions back at once; `_on_assign` seeks to the offsets in PostgreSQL)."""
        log.warning("%s: the Kafka client has known no broker for %.0fs (librdkafka dropped them all around "
                    "a broker restart and will not reconnect); replacing it", self.group_id, self.brokers.grace)
        self._settle()
        self.stats.reconnects += 1
        old, self._kafka = self._kafka, None
        try:
            old.close()  # reaches no broker: nothing to leave or commit
        except Exception as exc:  # a wedged client may fail to close; it is dropped anyway
            log.debug("closing the wedged Kafka client failed: %s", exc)
        if self._slot is not None:
            self._slot.release()  # so the new client claims the same slot, hence the same member id
            self._slot = None
        self._assigned, self._at_end, self._assignment_known = set(), set(), False
        self.brokers.reset()
        self._kafka = self._consumer()

    def _step(self, consumer) -> bool:
        """Consume one batch and hand it to the committer; True once caught up (`until_caught_up`)."""

        self._committer.raise_if_failed()
        self._mirror_committed(consumer)
        messages = consumer.consume(num_messages=self.batch_size, timeout=self.batch_timeout)
        self.dead_letters.serve()  # its statistics: a dead-letter producer that knows no broker is replaced
        self.stats.dead_letter_reconnects = self.dead_letters.reconnects
        if (state := self.brokers.quiet_report(bool(messages))) is not None:  # idle, or stalled: say which
            log.info("%s: nothing received for %.0fs; Kafka client: %s", self.group_id, self.brokers.idle_report, state)
        rows = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add((message.topic(), message.partition()))
                    record_at_end(self.projection.name, message.topic(), message.partition())
                    continue
                if error.fatal() or error.code() == KafkaError._FATAL:  # e.g. fenced by a static member
                    raise KafkaException(error)
                log.warning("Kafka: %s", error)
                continue
            tp = (message.topic(), message.partition())
            self._at_end.discard(tp)
            rows.append((tp[0], tp[1], message.offset(), message.key(), message.value()))
        if rows:
            if self._first_message_at is None:
                self._first_message_at = time.monotonic()
            batch = build_batch(rows, self.expected_types)
            batch.events = reduce_isolating(self.projection, batch, batch.events)
            self._committer.submit(batch)
        if self.until_caught_up and self._caught_up():
            self._committer.drain()
            self.stats.stopped_by = "caught-up"
            return True
        return False

    def _mirror_committed(self, consumer) -> None:
        """Offsets PostgreSQL committed since the last call, told to Kafka (for lag tools only)."""
        offsets: dict[tuple[str, int], int] = {}
        while not self._committed.empty():
            offsets.update(self._committed.get_nowait())
        mirror_offsets(self.projection.name, consumer, offsets)

    def _settle(self) -> None:
        """Wait for the batches in flight; those a replay's swap fenced off are dropped, not retried
        (the offsets the replay stored say where to resume, and the next assignment or `_resync`
        seeks there)."""
        try:
            self._committer.drain()
        except Fenced as exc:
            log.info("%s", exc)
            self._replace_committer()

    def _replace_committer(self) -> None:
        """A committer that failed keeps refusing batches: start a fresh one."""
        self._committer.close()
        self._committer = BackgroundCommitter(self._commit)

    def _resync(self, consumer, fenced: Fenced) -> None:
        """A replay swapped the tables: drop the batches in flight, seek every assigned partition to
        the offsets stored with the swapped tables, and carry on under the new generation."""

        log.info("%s", fenced)
        self.stats.resyncs += 1
        self._replace_committer()
        wanted = sorted(self._assigned)
        generation, stored = self._with_postgres(lambda conn: self._load_position(conn, wanted),
                                                 "read stored offsets")
        self._generation = generation
        if wanted:
            # assign() (not seek()) works whatever state each partition's fetcher is in, and drops
            # the messages fetched from the old positions.
            consumer.assign([TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING)) for t, p in wanted])
        self._at_end -= self._assigned

    def _load_position(self, conn: psycopg.Connection,
                       partitions: list[tuple[str, int]]) -> tuple[int, dict[tuple[str, int], int]]:
        """The generation (share-locked first, so no swap commits in between) and the stored offsets."""
        generation = self.fence.hold(conn) if self.fence is not None else 0
        return generation, self.offsets.load(conn, partitions)

    def _caught_up(self) -> bool:
        """Every assigned partition reached its end (or the group gave this process none)."""
        if not self._assignment_known:
            return False
        return self._assigned <= self._at_end

    # --- Kafka ---------------------------------------------------------------------------------------

    def _consumer(self):
        consumer, self._slot = group_consumer(self.settings, self.group_id, self.projection.name,
                                              stats_cb=self.brokers)
        consumer.subscribe(list(self.topics.events), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        return consumer

    def _on_assign(self, consumer, partitions) -> None:
        """Seek every assigned partition to the offset stored with the projection's rows."""

        self._settle()  # the connection is free, and offsets of earlier batches are stored
        wanted = [(p.topic, p.partition) for p in partitions]
        self._generation, stored = self._with_postgres(lambda conn: self._load_position(conn, wanted),
                                                       "read stored offsets")
        for p in partitions:
            p.offset = stored.get((p.topic, p.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        if self._lag is not None:
            self._lag.track({tp: stored.get(tp, 0) for tp in wanted})
        self._assigned = set(wanted)
        self._at_end -= self._assigned
        self._assignment_known = True
        log.info("%s: assigned %s", self.group_id, ", ".join(f"{t}[{p}]@{stored.get((t, p), 0)}"
                                                             for t, p in sorted(wanted)) or "nothing")

    def _on_revoke(self, consumer, partitions) -> None:
        # Commit what is in flight, so the partitions' next owner starts after it.
        self._settle()
        revoked = {(p.topic, p.partition) for p in partitions}
        if self._lag is not None:
            self._lag.forget(revoked)
        self._assigned -= revoked
        self._at_end -= revoked
        self._assignment_known = False
        consumer.unassign()

    # --- PostgreSQL ----------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        dsn = self.settings.require_postgres()
        options: dict[str, Any] = {"application_name": f"assetlog.consume.{self.projection.name}"}
        if "connect_timeout" not in conninfo.conninfo_to_dict(dsn):
            options["connect_timeout"] = 5
        conn = psycopg.connect(dsn, **options)
        try:
            require_migrated(conn)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    def _with_postgres(self, work, what: str):
        """Run `work(conn)` in a transaction, retrying with backoff while the failure is transient."""
        return self._postgres.transaction(work, what)

    def _commit(self, batch: Batch) -> None:
        """Project one batch: rows, dead letters (their copies acknowledged first) and offsets in one
        transaction (`TrackedWriter`).

        Runs on the committer thread; the main thread only touches the connection after `drain()`.
        """

        def work(conn: psycopg.Connection) -> None:
            if self.fence is not None:
                self.fence.check(conn, self._generation)  # first: a swap in progress makes this wait
            self.writer.write(conn, batch, publish=self.dead_letters.publish)

        committing = time.monotonic()
        self._with_postgres(work, "commit a batch")
        record_commit(self.projection.name, batch, time.monotonic() - committing)
        self._committed.put(dict(batch.next_offsets))  # the consumer's thread mirrors them to Kafka
        if self._lag is not None:
            self._lag.track(batch.next_offsets)
        if self._mirror is not None:
            self._mirror.track(batch.next_offsets)  # copied to Kafka later, on the mirror's own thread
        self.stats.count(batch)
        for letter in batch.dead_letters:
            log.warning("%s: dead-lettered %s[%d]@%d to %s: %s: %s", self.projection.name,
                        letter.position.topic, letter.position.partition, letter.position.offset,
                        letter.dead_letter_topic, letter.reason, letter.detail)


def run_until_caught_up(projection: str | Projection, settings: Settings | None = None, **options: Any) -> RunStats:
    """Project everything published so far, then return (for scripts, the demo and tests).

    `options` are ProjectionRunner's keyword arguments (batch_size, ...).
    """
    settings = settings or Settings.from_env()
    return ProjectionRunner(projection, settings, until_caught_up=True, **options).run()
