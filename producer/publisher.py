"""Finished task runs -> outbox -> Kafka, on one writer thread per publisher.

A task body never waits on the network: `publish()` appends to an in-memory
queue. The writer thread turns what it finds into events, commits them to the
outbox in one transaction (group commit), hands them to an idempotent
confluent-kafka producer (see `delivery`) and deletes each row once Kafka
acknowledged all its messages. A delivery error never deletes a row: it is
retried later, or by the next publisher that starts on the same outbox. Only
the writer thread touches the producer and the SQLite connection.

`flush()` (called at the end of every flow run) returns once the events
published before it are acknowledged, or are safely in the outbox and either
the brokers are unreachable or the timeout passed.

Nothing is dropped silently: a task run ending while the outbox cannot be
written waits for room or fails (`outbox_gate`), so does a flush whose events
are not in the outbox yet, and an event larger than Kafka accepts is refused
when it is made (`limits`). The writer thread survives every outbox error and
takes up its work again once the file can be written.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from assetlog.config import Settings
from assetlog.errors import AssetlogError, ConfigError
from assetlog.producer.delivery import FAILED, PRODUCER_DEFAULTS, UNSENT, KafkaSender, Row, describe
from assetlog.producer.events import EventIdSource, FinishedTaskRun, ProducerIdentity, new_event_id
from assetlog.producer.limits import (
    KafkaLimits,
    TopicCheck,
    check_metadata_size,
    check_run_size,
    missing_topics_error,
    producer_max_bytes,
)
from assetlog.producer.outbox import Message, Outbox, outbox_path
from assetlog.producer.outbox_gate import OutboxGate
from assetlog.producer.recording_errors import FULL, LineageNotRecorded, OutboxUnavailable, outbox_problem
from assetlog.producer.run_encoding import run_encoder

log = logging.getLogger("assetlog.producer")

ENV_FLUSH_TIMEOUT = "ASSETLOG_FLUSH_TIMEOUT_SECONDS"
DEFAULT_FLUSH_TIMEOUT = 10.0

MAX_ROW_EVENTS = 5000
# Task runs waiting for the writer thread before publish() lets it catch up: a loop of tasks faster
# than the writer would otherwise grow the queue (and the writer's next transaction) without bound.
MAX_QUEUED_RUNS = 5000
MAX_UNSENT_IN_MEMORY = 40_000  # events of committed rows not yet handed to Kafka, kept in memory
HEARTBEAT_SECONDS = 2.0
ADOPT_SECONDS = 10.0
MAX_RETRY_DELAY = 60.0
BROKERS_DOWN_GRACE = 1.0
OUTBOX_RETRY_SECONDS = 0.5  # how often a writer retries an outbox it could not write
# How long a starting publisher waits for the brokers to say whether its topics exist.
TOPIC_CHECK_SECONDS = 5.0

_open_publishers: weakref.WeakSet[Publisher] = weakref.WeakSet()


def flush_timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV_FLUSH_TIMEOUT)
    if not raw:
        return DEFAULT_FLUSH_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError(f"{ENV_FLUSH_TIMEOUT}={raw!r}: expected a number of seconds (0 or more)")
    return value


@dataclass(frozen=True)
class FlushResult:
    """`waiting` events published before the flush are not acknowledged yet; they are
    in the outbox (or, if `reason` says so, could not even be written there)."""

    waiting: int
    reason: str | None = None

    @property
    def complete(self) -> bool:
        return self.waiting == 0


class Publisher:
    """Sends finished task runs' events to Kafka through the outbox in `settings.outbox_dir`."""

    def __init__(self, settings: Settings, *, flush_timeout: float | None = None,
                 producer_config: Mapping[str, object] | None = None, verify_topics: bool = True) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.flush_timeout = flush_timeout_from_env() if flush_timeout is None else flush_timeout
        self.owner = f"{os.getpid()}-{new_event_id()}"
        self.pid = os.getpid()
        self._producer_overrides = dict(producer_config or {})
        self._verify_topics = verify_topics
        self.limits = KafkaLimits(producer_max_bytes(
            {**PRODUCER_DEFAULTS, **self._producer_overrides, **settings.kafka_settings}))
        self._identity = ProducerIdentity.current()
        self._encode_run = run_encoder()
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._gate = OutboxGate(settings.outbox_full, settings.outbox_full_wait, self._cond)
        self._missing_topics: list[str] = []
        self._wakeup = threading.Event()
        self._queue: deque[tuple[int, FinishedTaskRun]] = deque()
        self._seq = 0
        # Writer-thread state; snapshots below are read by flush() under _cond.
        self._committed_seq = 0
        self._unresolved: list[tuple[int, int]] = []
        self._failed: list[tuple[int, int, str]] = []
        self._brokers_down = False  # mirrored from the sender, read by flush()
        self._flush_waiters = 0
        self._closing = False
        self._closed = False
        self._crash: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assetlog-publisher", daemon=True)
        _open_publishers.add(self)
        self._thread.start()
        self._started.wait()
        problem = self._gate.problem
        refusal: BaseException | None = self._crash
        if refusal is None and problem is not None and problem.kind != FULL:
            refusal = problem  # damaged or unwritable: waiting cannot help, fail before any task runs
        if refusal is None and self._missing_topics:
            refusal = missing_topics_error(settings, self._missing_topics)
        if refusal is not None:
            self._stop_writer()
            if isinstance(refusal, AssetlogError):
                raise refusal
            raise RuntimeError(f"the Assetlog publisher could not start: {refusal}") from refusal

    # -- caller side ----------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def outbox_problem(self) -> OutboxUnavailable | None:
        """Why the outbox cannot be written now (None while it can)."""
        return self._gate.problem

    def check_metadata(self, key: str, values: Mapping[str, str]) -> None:
        """Raise EventTooLarge if `key`'s metadata (encoded values) makes its event too large."""
        check_metadata_size(key, values, self.limits, self.topics.metadata)

    def publish(self, run: FinishedTaskRun) -> None:
        """Queue one finished task run's events; returns at once while the outbox is healthy.

        Raises EventTooLarge for a run with an event Kafka would refuse, and OutboxUnavailable
        when the outbox cannot take the events (after waiting for room, if so configured)."""
        if self._closed or self._closing:
            raise RuntimeError("this Assetlog publisher is closed")
        if self._crash is not None:
            raise RuntimeError(f"the Assetlog publisher stopped: {self._crash}") from self._crash
        if os.getpid() != self.pid:
            raise RuntimeError(f"this Assetlog publisher belongs to process {self.pid}; create one per process")
        check_run_size(run, self.limits, self._encode_run, self.topics, self._identity)
        if self._gate.problem is not None:
            self._gate.admit(f"the lineage events of task run {run.task_run_id} ({run.task_name})")
        with self._lock:
            self._seq += 1
            self._queue.append((self._seq, run))
        if not self._wakeup.is_set():
            self._wakeup.set()
        if len(self._queue) >= MAX_QUEUED_RUNS:
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Back-pressure: give the writer time to take the queue into the local outbox (Kafka up or
        not), for at most the flush timeout; never while the outbox cannot be written."""
        deadline = time.monotonic() + self.flush_timeout
        with self._cond:
            while (len(self._queue) >= MAX_QUEUED_RUNS // 2 and self._gate.problem is None
                   and self._crash is None and not self._closing):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(min(remaining, 0.05))

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Wait until what was published before is acknowledged, or safely in the outbox and
        the brokers are down or `timeout` (default: the publisher's flush timeout) passed."""
        timeout = self.flush_timeout if timeout is None else timeout
        started = time.monotonic()
        deadline = started + timeout
        with self._lock:
            target = self._seq
        with self._cond:
            self._flush_waiters += 1
            self._wakeup.set()
            try:
                while True:
                    if self._crash is not None:
                        raise RuntimeError(f"the Assetlog publisher stopped: {self._crash}") from self._crash
                    now = time.monotonic()
                    committed = self._committed_seq >= target
                    in_flight = sum(events for seq, events in self._unresolved if seq <= target)
                    failed = [(events, error) for seq, events, error in self._failed if seq <= target]
                    waiting = in_flight + sum(events for events, _ in failed)
                    if committed and in_flight == 0:
                        return FlushResult(waiting, self._waiting_reason(False, failed[0][1]) if failed else None)
                    # "Brokers down" may be an idle connection the broker closed: give the
                    # reconnection a moment before trusting it.
                    brokers_down = self._brokers_down and now >= started + BROKERS_DOWN_GRACE
                    if committed and (brokers_down or now >= deadline or not self.settings.kafka_bootstrap
                                      or self._missing_topics):
                        return FlushResult(waiting, self._waiting_reason(now >= deadline))
                    if not committed and self._gate.problem is not None:
                        self._gate.admit(f"the lineage events of {target - self._committed_seq} task runs",
                                         waited_since=started)  # raises, or returns once written
                        continue
                    if not committed and now >= deadline + 30.0:
                        return FlushResult(waiting + target - self._committed_seq, "the outbox writer is stuck")
                    self._cond.wait(timeout=max(0.001, min(0.1, deadline - now)))
            finally:
                self._flush_waiters -= 1

    def _waiting_reason(self, timed_out: bool, failure: str | None = None) -> str:
        if not self.settings.kafka_bootstrap:
            return "ASSETLOG_KAFKA_BOOTSTRAP is not set"
        if self._missing_topics:
            return str(missing_topics_error(self.settings, self._missing_topics))
        if failure is not None:
            return failure
        if self._brokers_down:
            return f"Kafka at {self.settings.kafka_bootstrap} is unreachable"
        return "not acknowledged within the flush timeout" if timed_out else "delivery failed"

    def close(self, timeout: float | None = None) -> FlushResult:
        """Flush, then stop the writer; what is not delivered stays in the outbox for the
        next publisher (this one gives its rows up at once)."""
        if self._closed:
            return FlushResult(0)
        try:
            return self.flush(timeout) if self._crash is None else FlushResult(0)
        finally:
            self._stop_writer()

    def _stop_writer(self) -> None:
        with self._cond:
            self._closing = True
        self._wakeup.set()
        self._thread.join(timeout=30)
        self._closed = True
        _open_publishers.discard(self)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread ----------------------------------------------------------------------------------
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
                self._sender = KafkaSender(self.settings, self._producer_overrides)
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
        while check.poll() is None and not check.brokers_down and time.monotonic() < deadline:
            sender.producer.poll(0.02)
        self._poll_topic_check()

    def _poll_topic_check(self) -> None:
        check = self._topic_check
        if check is None:
            return
        result = check.poll()
        if result is None:
            return
        self._topic_check = None
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
            done = sender.restart() if sender.fatal is not None else sender.serve(hurry=self._flush_waiters > 0)
            self._brokers_down = sender.brokers_down
            if done:
                self._settle(done)
                busy = True
        self._publish_snapshot()
        return busy

    def _commit_queued(self) -> bool:
        assert self._outbox is not None
        items: list[tuple[int, FinishedTaskRun]] = []
        while self._queue:
            items.append(self._queue.popleft())
        if not items:
            return False
        per_topic: dict[str, list[Message]] = {}
        for _seq, run in items:
            try:
                for topic, key, value in self._encode_run(run, self.topics, self._identity, self._ids):
                    messages = per_topic.get(topic)
                    if messages is None:
                        messages = per_topic[topic] = []
                    messages.append((key, value))
            except Exception:  # a bug, not a user error: never stop the writer for it
                log.exception("cannot encode the events of task run %s (%s)", run.task_run_id, run.task_name)
        rows = [(topic, messages[i:i + MAX_ROW_EVENTS])
                for topic, messages in per_topic.items() for i in range(0, len(messages), MAX_ROW_EVENTS)]
        try:
            ids = self._outbox.append(rows, self.owner)
        except (sqlite3.Error, OSError) as exc:
            problem = outbox_problem(self._outbox.path, exc)
            if problem is None:
                raise
            self._queue.extendleft(reversed(items))  # kept in memory, in order, until the outbox takes them
            self._gate.report(problem)
            if problem.kind == FULL:
                self._try_checkpoint()
            self._wakeup.wait(OUTBOX_RETRY_SECONDS)
            return False
        self._gate.report(None)
        seq = items[-1][0]
        # Rows waiting for their turn keep their messages in memory only up to a bound; beyond it
        # (tasks faster than Kafka acknowledges) they are read back from the outbox when sent.
        held = sum(row.events for row in self._unsent if row.messages is not None)
        for row_id, (topic, messages) in zip(ids, rows, strict=True):
            keep = held < MAX_UNSENT_IN_MEMORY
            held += len(messages) if keep else 0
            row = Row(row_id, topic, len(messages), messages if keep else None, seq)
            self._rows[row_id] = row
            self._unsent.append(row)
        self._committed_local = seq  # flush() sees it with the rows, in _publish_snapshot
        return True

    def _try_checkpoint(self) -> None:
        """On a full disk the write-ahead log may hold most of the outbox's bytes: fold it back."""
        try:
            assert self._outbox is not None
            self._outbox.checkpoint()
        except sqlite3.Error as exc:
            log.debug("outbox checkpoint failed: %s", exc)

    def _delete_delivered(self, ids: list[int]) -> None:
        """Delete delivered rows; if the outbox cannot be written they are kept to delete later (and
        not sent again meanwhile; should the process end first, a resend only duplicates, which the
        consumers drop by event id)."""
        assert self._outbox is not None
        try:
            self._outbox.delete(ids)
        except (sqlite3.Error, OSError) as exc:
            if outbox_problem(self._outbox.path, exc) is None:
                raise
            if ids is not self._undeleted:
                self._undeleted.extend(ids)
            return
        if ids is self._undeleted:
            self._undeleted = []

    def _send(self, sender: KafkaSender) -> bool:
        sent = False
        while self._unsent and sender.has_room:
            row = self._unsent.popleft()
            if row.messages is None:  # adopted, or dropped from memory after a failure
                loaded = self._outbox.load(row.id) if self._outbox else None
                if loaded is None:  # delivered and deleted by someone else meanwhile
                    self._rows.pop(row.id, None)
                    continue
                row.messages = loaded[1]
                row.events = len(row.messages)
            sender.send(row)
            sent = True
        return sent

    def _settle(self, done: list[Row]) -> None:
        """Apply an epoch's outcome: delete delivered rows, keep failed ones for a retry, set
        aside what Kafka can never accept."""
        assert self._outbox is not None
        delivered = [row for row in done if not row.failed and not row.undeliverable]
        if delivered:
            self._delete_delivered([row.id for row in delivered])
            for row in delivered:
                self._rows.pop(row.id, None)
        for row in done:
            if row.undeliverable:
                self._set_aside(row)
            if not row.failed:
                continue
            error = describe(row.error)
            partial = len(row.failed) < row.events
            try:
                self._outbox.record_failure(row.id, error, row.failed if partial else None)
            except (sqlite3.Error, OSError) as exc:  # the row stays as it was: resent whole, at worst a duplicate
                if outbox_problem(self._outbox.path, exc) is None:
                    raise
            row.attempts += 1
            row.events = len(row.failed)
            row.state, row.messages, row.failed = FAILED, None, []
            row.retry_at = time.monotonic() + min(MAX_RETRY_DELAY, 2.0 ** row.attempts)
            log.warning("%d lineage events for %s were not delivered (%s); they stay in the outbox and are "
                        "retried", row.events, row.topic, error)
        if delivered:
            # Kafka delivers again: what timed out while it was away is resent now, not after its
            # backoff, and a flush waits for it (a worker ending right after an outage would otherwise
            # leave it to the next publisher).
            for row in self._rows.values():
                if row.state == FAILED and _timed_out(row.error):
                    row.state = UNSENT
                    self._unsent.append(row)

    def _set_aside(self, row: Row) -> None:
        """Messages Kafka refused for good (too large, invalid) become an undeliverable row: never
        sent again, never waited for; `assetlog outbox dead-letter` moves them out of the outbox."""
        assert self._outbox is not None
        error = describe(row.permanent_error)
        try:
            marked = self._outbox.set_undeliverable(row.id, error, row.undeliverable, row.failed)
        except (sqlite3.Error, OSError) as exc:
            if outbox_problem(self._outbox.path, exc) is None:
                raise
            row.failed.extend(row.undeliverable)  # try again later, as a failure
            row.error = row.error or row.permanent_error
            row.undeliverable = []
            return
        log.error("%d lineage events for %s can never be delivered (%s); they are set aside as row %d of the "
                  "outbox %s: `assetlog outbox dead-letter --undeliverable` moves them out of the way",
                  len(row.undeliverable), row.topic, error, marked, self._outbox.path)
        row.undeliverable = []
        if not row.failed:
            self._rows.pop(row.id, None)

    def _adopt(self) -> None:
        assert self._outbox is not None
        for stored in self._outbox.adopt(self.owner):
            if stored.id not in self._rows:
                row = Row(stored.id, stored.topic, stored.events, None, 0, stored.attempts)
                self._rows[stored.id] = row
                if self._sender is not None:
                    self._unsent.append(row)
                else:
                    row.state = FAILED
        self._publish_snapshot()  # a flush() starting now must see the adopted rows

    def _publish_snapshot(self) -> None:
        unresolved = [(row.seq, row.events) for row in self._rows.values() if row.state != FAILED]
        failed = [(row.seq, row.events, describe(row.error) if row.error else "not sent yet")
                  for row in self._rows.values() if row.state == FAILED]
        with self._cond:
            self._committed_seq = self._committed_local
            self._unresolved, self._failed = unresolved, failed
            self._cond.notify_all()

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


def _timed_out(error: object) -> bool:
    """A delivery that failed because no broker answered in time (not a refusal by one)."""
    from confluent_kafka import KafkaError

    code = getattr(error, "code", None)
    return callable(code) and code() == KafkaError._MSG_TIMED_OUT


def close_all_publishers(timeout: float | None = None) -> None:
    """Flush and close every open publisher (at interpreter exit).

    Events that could not even be written to the outbox are lost when the process
    ends: that is said in the log and the process exits with status 1, never 0."""
    lost = False
    for publisher in list(_open_publishers):
        try:
            if publisher.pid == os.getpid():
                publisher.close(timeout)
        except LineageNotRecorded as exc:
            log.critical("%s; they are lost as this process exits", exc)
            lost = True
        except Exception:
            log.exception("error while closing an Assetlog publisher")
    if lost:
        logging.shutdown()
        os._exit(1)  # atexit cannot change the exit status otherwise
