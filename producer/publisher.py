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
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assetlog.config import Settings
from assetlog.errors import ConfigError
from assetlog.producer.delivery import FAILED, UNSENT, KafkaSender, Row, describe
from assetlog.producer.encoding import encoder_for
from assetlog.producer.events import (
    EventIdSource,
    FinishedTaskRun,
    OutgoingEvent,
    ProducerIdentity,
    new_event_id,
)
from assetlog.producer.outbox import Message, Outbox
from assetlog.producer.run_encoding import EncodedEvent, run_encoder

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
                 producer_config: Mapping[str, object] | None = None) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.flush_timeout = flush_timeout_from_env() if flush_timeout is None else flush_timeout
        self.owner = f"{os.getpid()}-{new_event_id()}"
        self.pid = os.getpid()
        self._producer_overrides = dict(producer_config or {})
        self._identity = ProducerIdentity.current()
        self._encode_run = run_encoder()
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._wakeup = threading.Event()
        self._queue: deque[tuple[int, FinishedTaskRun | tuple[EncodedEvent, ...]]] = deque()
        self._seq = 0
        # Writer-thread state; snapshots below are read by flush() under _cond.
        self._committed_seq = 0
        self._durable_seq = 0  # set as soon as a commit returns, for wait_committed()
        self._unresolved: list[tuple[int, int]] = []
        self._failed: list[tuple[int, int, str]] = []
        self._uncommitted_error: str | None = None
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
        if self._crash is not None:
            raise RuntimeError(f"the Assetlog publisher could not start: {self._crash}") from self._crash

    # -- caller side ----------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, run: FinishedTaskRun) -> None:
        """Queue one finished task run's events; returns at once."""
        self._enqueue(run)

    def publish_events(self, events: Sequence[OutgoingEvent]) -> None:
        """Queue events built elsewhere (`events.events_for` with ids of the caller's choosing, as
        an integration translating another system's lineage does); same outbox, same guarantees.

        They are encoded here, in the caller's thread, so a record that does not fit its schema
        raises to the caller instead of being dropped by the writer thread.
        """
        memo: dict[int, bytes] = {}
        encoded = tuple((e.topic, e.key.encode(), encoder_for(e.event_type)(e.record, memo)) for e in events)
        if encoded:
            self._enqueue(encoded)

    def _enqueue(self, item: FinishedTaskRun | tuple[EncodedEvent, ...]) -> None:
        if self._closed or self._closing:
            raise RuntimeError("this Assetlog publisher is closed")
        if self._crash is not None:
            raise RuntimeError(f"the Assetlog publisher stopped: {self._crash}") from self._crash
        if os.getpid() != self.pid:
            raise RuntimeError(f"this Assetlog publisher belongs to process {self.pid}; create one per process")
        with self._lock:
            self._seq += 1
            self._queue.append((self._seq, item))
        if not self._wakeup.is_set():
            self._wakeup.set()
        if len(self._queue) >= MAX_QUEUED_RUNS:
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Back-pressure: give the writer time to take the queue into the local outbox (Kafka up or
        not), for at most the flush timeout; never while the outbox cannot be written."""
        deadline = time.monotonic() + self.flush_timeout
        with self._cond:
            while (len(self._queue) >= MAX_QUEUED_RUNS // 2 and self._uncommitted_error is None
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
                        return FlushResult(waiting, failed[0][1] if failed else None)
                    # "Brokers down" may be an idle connection the broker closed: give the
                    # reconnection a moment before trusting it.
                    brokers_down = self._brokers_down and now >= started + BROKERS_DOWN_GRACE
                    if committed and (brokers_down or now >= deadline or not self.settings.kafka_bootstrap):
                        return FlushResult(waiting, self._waiting_reason(now >= deadline))
                    if not committed and now >= deadline + 30.0:
                        return FlushResult(waiting + target - self._committed_seq,
                                           f"the outbox cannot be written: {self._uncommitted_error}")
                    self._cond.wait(timeout=max(0.001, min(0.1, deadline - now)))
            finally:
                self._flush_waiters -= 1

    def wait_committed(self, timeout: float = 30.0) -> str | None:
        """Wait until what was published before is committed to the outbox (durable: a crash no longer
        loses it), without waiting for Kafka; None when it is, else why not (the outbox's error).

        Unlike `flush()` it does not make the writer hurry Kafka acknowledgements, which would cost
        every waiting caller a producer flush: a receiver acknowledging each event needs only this.
        """
        with self._lock:
            target = self._seq
        self._wakeup.set()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._durable_seq < target:
                if self._crash is not None:
                    raise RuntimeError(f"the Assetlog publisher stopped: {self._crash}") from self._crash
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"the outbox cannot be written: {self._uncommitted_error or 'timed out'}"
                self._cond.wait(min(remaining, 0.1))
        return None

    def _waiting_reason(self, timed_out: bool) -> str:
        if not self.settings.kafka_bootstrap:
            return "ASSETLOG_KAFKA_BOOTSTRAP is not set"
        if self._brokers_down:
            return f"Kafka at {self.settings.kafka_bootstrap} is unreachable"
        return "not acknowledged within the flush timeout" if timed_out else "delivery failed"

    def close(self, timeout: float | None = None) -> FlushResult:
        """Flush, then stop the writer; what is not delivered stays in the outbox for the
        next publisher (this one gives its rows up at once)."""
        if self._closed:
            return FlushResult(0)
        result = self.flush(timeout) if self._crash is None else FlushResult(0)
        with self._cond:
            self._closing = True
        self._wakeup.set()
        self._thread.join(timeout=30)
        self._closed = True
        _open_publishers.discard(self)
        return result

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        self._rows: dict[int, Row] = {}
        self._unsent: deque[Row] = deque()
        self._committed_local = 0
        self._ids = EventIdSource()
        self._sender: KafkaSender | None = None
        self._outbox: Outbox | None = None
        try:
            self._outbox = Outbox(self.settings.outbox_dir)
            self._outbox.register(self.owner)
            if self.settings.kafka_bootstrap:
                self._sender = KafkaSender(self.settings, self._producer_overrides)
            else:
                log.warning("ASSETLOG_KAFKA_BOOTSTRAP is not set: lineage events wait in the outbox %s",
                            self._outbox.path)
            self._adopt()
        except BaseException as exc:  # surfaced by the constructor
            self._crash = exc
            self._started.set()
            self._shutdown()
            return
        self._started.set()
        last_beat = last_adopt = time.monotonic()
        try:
            while True:
                busy = self._step()
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_SECONDS:
                    self._outbox.heartbeat(self.owner)
                    last_beat = now
                if now - last_adopt >= ADOPT_SECONDS:
                    self._adopt()
                    last_adopt = now
                if self._closing and not self._queue:
                    break
                if not busy and not self._queue:
                    in_flight = self._sender is not None and self._sender.epoch
                    self._wakeup.wait(0.002 if in_flight else 0.5)
        except BaseException as exc:
            log.exception("the Assetlog publisher stopped; undelivered events stay in the outbox")
            self._crash = exc
        finally:
            self._shutdown()

    def _step(self) -> bool:
        """One round: commit what was queued, send, serve delivery reports. True if busy."""
        self._wakeup.clear()
        busy = self._commit_queued()
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
        items: list[tuple[int, FinishedTaskRun | tuple[EncodedEvent, ...]]] = []
        while self._queue:
            items.append(self._queue.popleft())
        if not items:
            return False
        per_topic: dict[str, list[Message]] = {}
        for _seq, item in items:
            try:
                encoded = (self._encode_run(item, self.topics, self._identity, self._ids)
                           if isinstance(item, FinishedTaskRun) else item)
                for topic, key, value in encoded:
                    messages = per_topic.get(topic)
                    if messages is None:
                        messages = per_topic[topic] = []
                    messages.append((key, value))
            except Exception:  # a bug, not a user error: never stop the writer for it
                what = (f"task run {item.task_run_id} ({item.task_name})" if isinstance(item, FinishedTaskRun)
                        else f"{len(item)} prepared events")  # (encoded already: cannot fail)
                log.exception("cannot encode the events of %s", what)
        rows = [(topic, messages[i:i + MAX_ROW_EVENTS])
                for topic, messages in per_topic.items() for i in range(0, len(messages), MAX_ROW_EVENTS)]
        try:
            ids = self._outbox.append(rows, self.owner)
        except Exception as exc:
            log.error("cannot write the outbox %s (%s); retrying", self._outbox.path, exc)
            self._uncommitted_error = str(exc)
            self._queue.extendleft(reversed(items))
            time.sleep(0.5)
            return False
        self._uncommitted_error = None
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
        with self._cond:  # wait_committed() needs no more: answer it now, not after this step's sends
            self._durable_seq = seq
            self._cond.notify_all()
        return True

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
        """Apply an epoch's outcome: delete delivered rows, keep failed ones for a retry."""
        assert self._outbox is not None
        delivered = [row for row in done if not row.failed]
        if delivered:
            self._outbox.delete([row.id for row in delivered])
            for row in delivered:
                self._rows.pop(row.id, None)
        for row in done:
            if not row.failed:
                continue
            error = describe(row.error)
            partial = len(row.failed) < row.events
            self._outbox.record_failure(row.id, error, row.failed if partial else None)
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
            with self._cond:
                self._cond.notify_all()


def _timed_out(error: object) -> bool:
    """A delivery that failed because no broker answered in time (not a refusal by one)."""
    from confluent_kafka import KafkaError

    code = getattr(error, "code", None)
    return callable(code) and code() == KafkaError._MSG_TIMED_OUT


def close_all_publishers(timeout: float | None = None) -> None:
    """Flush and close every open publisher (at interpreter exit)."""
    for publisher in list(_open_publishers):
        try:
            if publisher.pid == os.getpid():
                publisher.close(timeout)
        except Exception:
            log.exception("error while closing an Assetlog publisher")
