"""The publisher's writer thread: queued task runs -> outbox rows -> Kafka -> deleted rows.

Only this thread touches the SQLite connection and the Kafka producer. It commits
what task runs queued (group commit), sends rows, settles delivery reports
(delete, retry later, or set aside what Kafka refuses for good) and adopts the
rows of publishers that are gone. It survives every error about the outbox file:
a full, unwritable or damaged outbox is reported to the gate (`outbox_gate`),
which holds task runs up or fails them, and the thread retries until the file
takes writes again. `Publisher` (the caller side) inherits it; sending rows and
settling their delivery reports is its other half, `outbox_sending`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from assetlog.broker_watch import NoBrokerWatch
from assetlog.config import Settings, Topics
from assetlog.producer.delivery import FAILED, UNSENT, KafkaSender, Row
from assetlog.producer.event_builders import EventIdSource, FinishedTaskRun, ProducerIdentity
from assetlog.producer.limits import KafkaLimits, TopicCheck, missing_topics_error
from assetlog.producer.outbox import Message, Outbox, outbox_path
from assetlog.producer.outbox_gate import OutboxGate
from assetlog.producer.outbox_sending import OutboxSending
from assetlog.producer.recording_errors import FULL, OutboxUnavailable, outbox_problem
from assetlog.producer.run_encoding import EncodedEvent

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("assetlog.producer")

MAX_ROW_EVENTS = 5000
MAX_UNSENT_IN_MEMORY = 40_000  # events of committed rows not yet handed to Kafka, kept in memory
HEARTBEAT_SECONDS = 2.0
ADOPT_SECONDS = 10.0
OUTBOX_RETRY_SECONDS = 0.5  # how often a writer retries an outbox it could not write
# Queued runs that end the commit window at once: holding more buys nothing (the per-commit costs are
# already shared by that many) and the queue's back-pressure starts at 5,000 (Publisher).
COMMIT_WINDOW_MAX_RUNS = 1000
# How long a starting publisher waits for the brokers to say whether its topics exist.
TOPIC_CHECK_SECONDS = 5.0


class OutboxWriter(OutboxSending):
    """The writer thread's half of a Publisher (state shared with it is declared here)."""

    settings: Settings
    topics: Topics
    owner: str
    limits: KafkaLimits
    _gate: OutboxGate
    _cond: threading.Condition
    _wakeup: threading.Event
    _started: threading.Event
    _queue: deque[FinishedTaskRun | tuple[EncodedEvent, ...]]
    _first_queued_at: float
    _commit_soon: threading.Event
    _taken_seq: int
    _producer_overrides: dict[str, object]
    brokers: NoBrokerWatch
    _verify_topics: bool
    _missing_topics: list[str]
    _identity: ProducerIdentity
    _encode_run: Callable[..., Any]
    _crash: BaseException | None
    _closing: bool
    _flush_waiters: int
    _brokers_down: bool
    _access_failure: str | None
    _durable_seq: int

    def _run(self) -> None:
        self._rows: dict[int, Row] = {}
        self._unsent: deque[Row] = deque()
        self._undeleted: list[int] = []  # delivered rows whose delete failed (outbox full): retried
        self._committed_local = 0
        self._ids = EventIdSource()
        self._sender: KafkaSender | None = None
        self._outbox: Outbox | None = None
        self._topic_check: TopicCheck | None = None
        try:
            if self.settings.kafka_bootstrap:
                self._sender = KafkaSender(self.settings, self._producer_overrides, self.brokers)
                if self._verify_topics:
                    self._topic_check = TopicCheck(self.settings, self.topics.events)
            else:
                log.warning("ASSETLOG_KAFKA_BOOTSTRAP is not set: lineage events wait in the outbox %s",
                            self.settings.outbox_dir)
            self._open_outbox()
            self._await_topic_check()
        except BaseException as exc:  # surfaced by the constructor
            self._crash = exc
            self._started.set()
            self._shutdown()
            return
        self._started.set()
        last_beat = last_adopt = time.monotonic()
        try:
            while True:
                try:
                    if self._outbox is None:
                        self._open_outbox()
                        if self._outbox is None:
                            self._wakeup.wait(OUTBOX_RETRY_SECONDS)
                    busy = self._step() if self._outbox is not None else False
                    now = time.monotonic()
                    probe = self._gate.problem is not None and not self._queue  # runs wait at the gate
                    if self._outbox is not None and (now - last_beat >= HEARTBEAT_SECONDS or probe):
                        last_beat = now
                        self._outbox.heartbeat(self.owner)
                        if probe:
                            self._gate.report(None)  # it takes writes again: let the waiting runs in
                    if self._outbox is not None and now - last_adopt >= ADOPT_SECONDS:
                        last_adopt = now
                        self._adopt()
                except (sqlite3.Error, OSError) as exc:  # the file, not the events: keep going
                    if outbox_problem(outbox_path(self.settings.outbox_dir), exc) is None:
                        raise
                    log.debug("the outbox could not be written (%s); retrying", exc)
                    if self._queue or self._gate.problem is not None:
                        self._gate.report(outbox_problem(outbox_path(self.settings.outbox_dir), exc))
                    busy = False
                    self._wakeup.wait(OUTBOX_RETRY_SECONDS)
                self._poll_topic_check()
                if self._closing and (not self._queue or self._outbox is None):
                    break
                if not busy and not self._queue:
                    in_flight = self._sender is not None and self._sender.epoch
                    self._wakeup.wait(0.002 if in_flight else 0.5)
                elif not busy and self._outbox is not None:  # runs held for the rest of the commit window
                    self._commit_soon.wait(self._first_queued_at + self.settings.outbox_commit_window
                                           - time.monotonic())
        except BaseException as exc:
            log.exception("the Assetlog publisher stopped; undelivered events stay in the outbox")
            self._crash = exc
        finally:
            self._shutdown()

    def _open_outbox(self) -> None:
        """Open and join the outbox; a failure is reported to the gate (and retried by the loop)."""
        try:
            outbox = Outbox(self.settings.outbox_dir)
        except OutboxUnavailable as problem:
            self._gate.report(problem)
            return
        try:
            outbox.register(self.owner)
        except (sqlite3.Error, OSError) as exc:
            outbox.close()
            problem = outbox_problem(outbox.path, exc)
            if problem is None:
                raise
            self._gate.report(problem)
            return
        self._outbox = outbox
        self._gate.report(None)
        self._adopt()

    def _await_topic_check(self) -> None:
        """Give the brokers a moment to say whether the topics exist (not if they are down)."""
        check, sender = self._topic_check, self._sender
        if check is None or sender is None:
            return
        deadline = time.monotonic() + TOPIC_CHECK_SECONDS
        while (check.poll() is None and not check.brokers_down and sender.access.failure is None
               and time.monotonic() < deadline):
            sender.producer.poll(0.02)
        self._access_failure = sender.access.failure or check.access.failure
        self._poll_topic_check()

    def _poll_topic_check(self) -> None:
        check = self._topic_check
        if check is None:
            return
        result = check.poll()
        if result is None:
            return
        self._topic_check = None
        self._access_failure = self._access_failure or check.access.failure
        self.limits.topic_max.update(result[0])
        if result[1]:
            self._missing_topics = result[1]
            if self._started.is_set():  # found late (the brokers were down): the events wait in the outbox
                log.error("%s; lineage events wait in the outbox %s until they exist",
                          missing_topics_error(self.settings, result[1]), self.settings.outbox_dir)

    def _step(self) -> bool:
        """One round: commit what was queued, send, serve delivery reports. True if busy."""
        self._wakeup.clear()
        busy = self._commit_queued()
        if self._undeleted:
            self._delete_delivered(self._undeleted)
        sender = self._sender
        if sender is not None:
            now = time.monotonic()
            for row in self._rows.values():
                if row.state == FAILED and row.retry_at <= now:
                    row.state = UNSENT
                    self._unsent.append(row)
            busy |= self._send(sender)
            replaced = sender.fatal is None and sender.wedged  # (a fatal error restarts it too, with backoff)
            if replaced:
                done = self._replace_wedged(sender)
            else:
                done = sender.restart() if sender.fatal is not None else sender.serve(hurry=self._flush_waiters > 0)
            self._brokers_down = sender.brokers_down
            if sender.access.failure is not None and self._access_failure is None:
                self._access_failure = sender.access.failure  # every retry would fail alike: said once
                log.error("%s; lineage events wait in the outbox %s", self._access_failure, self.settings.outbox_dir)
            if done:
                self._settle(done, resend_now=replaced)
                busy = True
        self._publish_snapshot()
        return busy

    def _commit_due(self) -> bool:
        """Commit the queue now, or hold it until the commit window (from the oldest queued run) ends?
        Tasks slower than the writer would otherwise be committed a few at a time, and a commit costs
        about the same however few events it holds (whole SQLite pages, a Kafka request per row, the
        interpreter lock taken from the task thread). Whoever needs durability ends the window."""
        window = self.settings.outbox_commit_window
        if window <= 0 or self._closing or self._gate.problem is not None or len(self._queue) >= COMMIT_WINDOW_MAX_RUNS:
            return True
        if self._commit_soon.is_set():
            self._commit_soon.clear()  # before the queue is taken: a later request sees its runs taken or sets it again
            return True
        return time.monotonic() >= self._first_queued_at + window

    def _commit_queued(self) -> bool:
        assert self._outbox is not None
        if not self._queue or not self._commit_due():
            return False
        queue, encode = self._queue, self._encode_run
        taken = len(queue)  # (runs queued while this batch is encoded wait for the next one)
        taken_at = time.monotonic()
        per_topic: dict[str, list[Message]] = {}
        # One run at a time, dropped once encoded: runs held until the whole batch was encoded outlived
        # the collector's young generations (its own allocations collect them) and brought a full
        # collection of the process's heap about every 20,000 runs. Encoded events are tuples of bytes,
        # which the collector stops visiting.
        for _ in range(taken):
            item = queue.popleft()
            try:
                encoded = (encode(item, self.topics, self._identity, self._ids)
                           if isinstance(item, FinishedTaskRun) else item)  # prepared events: encoded already
                for topic, key, value in encoded:
                    messages = per_topic.get(topic)
                    if messages is None:
                        messages = per_topic[topic] = []
                    messages.append((key, value))
            except Exception:  # a bug, not a user error: never stop the writer for it
                what = (f"task run {item.task_run_id} ({item.task_name})" if isinstance(item, FinishedTaskRun)
                        else f"{len(item)} prepared events")
                log.exception("cannot encode the events of %s", what)
        rows = [(topic, messages[i:i + MAX_ROW_EVENTS])
                for topic, messages in per_topic.items() for i in range(0, len(messages), MAX_ROW_EVENTS)]
        try:
            ids = self._outbox.append(rows, self.owner)
        except (sqlite3.Error, OSError) as exc:
            problem = outbox_problem(self._outbox.path, exc)
            if problem is None:
                raise
            # Kept in memory, in order, until the outbox takes them: as events already encoded, in as many
            # queue items as were taken (the writer numbers what it takes by counting items).
            prepared = tuple((topic, key, value) for topic, messages in per_topic.items() for key, value in messages)
            queue.extendleft([()] * (taken - 1) + [prepared])  # (extendleft reverses: `prepared` comes first)
            self._gate.report(problem)
            if problem.kind == FULL:
                self._try_checkpoint()
            self._wakeup.wait(OUTBOX_RETRY_SECONDS)
            return False
        self._gate.report(None)
        seq = self._taken_seq = self._taken_seq + taken  # the last item's number (see Publisher._queue)
        # Rows waiting for their turn keep their messages in memory only up to a bound; beyond it
        # (tasks faster than Kafka acknowledges) they are read back from the outbox when sent.
        held = sum(row.events for row in self._unsent if row.messages is not None)
        for row_id, (topic, messages) in zip(ids, rows, strict=True):
            keep = held < MAX_UNSENT_IN_MEMORY
            held += len(messages) if keep else 0
            row = Row(row_id, topic, len(messages), messages if keep else None, seq)
            row.committed_at = taken_at
            self._rows[row_id] = row
            self._unsent.append(row)
        self._committed_local = seq  # flush() sees it with the rows, in _publish_snapshot
        with self._cond:  # wait_committed() needs no more: answer it now, not after this step's sends
            self._durable_seq = seq
            self._cond.notify_all()
        return True

    def _try_checkpoint(self) -> None:
        """On a full disk the write-ahead log may hold most of the outbox's bytes: fold it back."""
        try:
            assert self._outbox is not None
            self._outbox.checkpoint()
        except sqlite3.Error as exc:
            log.debug("outbox checkpoint failed: %s", exc)

    def _shutdown(self) -> None:
        """Give the rows up (the next publisher adopts them as they are) and release everything."""
        try:
            if self._sender is not None and self._sender.epoch:
                self._sender.abandon()  # rows stay untouched in the outbox
            if self._outbox is not None:
                self._outbox.unregister(self.owner)
                self._outbox.close()
        except Exception:
            log.exception("error while closing the Assetlog publisher")
        finally:
            self._sender = None
            self._topic_check = None
            with self._cond:
                self._cond.notify_all()

