"""Finished task runs -> outbox -> Kafka, on one writer thread per publisher.

A task body never waits on the network: `publish()` appends to an in-memory
queue. The writer thread turns what it finds into events, commits them to the
outbox in one transaction (group commit; it lets runs gather for up to the
commit window first, unless a flush or a long queue asks for them now), hands them to an idempotent
confluent-kafka producer (see `delivery`) and deletes each row once Kafka
acknowledged all its messages. A delivery error never deletes a row: it is
retried later, or by the next publisher that starts on the same outbox. Only
the writer thread (`outbox_writer`) touches the producer and the SQLite connection.
A producer that has known no broker for `brokers.grace` seconds (librdkafka
left so around a broker restart never reconnects) is replaced by a new one,
which sends what the old one had not delivered (`reconnects` counts them).

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
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assetlog.broker_watch import NoBrokerWatch
from assetlog.config import Settings
from assetlog.errors import AssetlogError, ConfigError
from assetlog.kafka_access import KafkaAccessError
from assetlog.producer.delivery import PRODUCER_DEFAULTS
from assetlog.producer.encoding import encoder_for
from assetlog.producer.event_builders import FinishedTaskRun, OutgoingEvent, ProducerIdentity, new_event_id
from assetlog.producer.limits import (
    KafkaLimits,
    check_metadata_size,
    check_run_size,
    missing_topics_error,
    producer_max_bytes,
)
from assetlog.producer.outbox_gate import OutboxGate
from assetlog.producer.outbox_writer import COMMIT_WINDOW_MAX_RUNS, OutboxWriter
from assetlog.producer.recording_errors import FULL, LineageNotRecorded, OutboxUnavailable
from assetlog.producer.run_encoding import EncodedEvent, run_encoder

log = logging.getLogger("assetlog.producer")

ENV_FLUSH_TIMEOUT = "ASSETLOG_FLUSH_TIMEOUT_SECONDS"
DEFAULT_FLUSH_TIMEOUT = 10.0

# Task runs waiting for the writer thread before publish() lets it catch up: a loop of tasks faster
# than the writer would otherwise grow the queue (and the writer's next transaction) without bound.
MAX_QUEUED_RUNS = 5000
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


class Publisher(OutboxWriter):
    """Sends finished task runs' events to Kafka through the outbox in `settings.outbox_dir`."""

    def __init__(self, settings: Settings, *, flush_timeout: float | None = None,
                 producer_config: Mapping[str, object] | None = None, verify_topics: bool = True) -> None:
        self.settings = settings
        self.topics = settings.topics
        self._metadata_topic = self.topics.metadata  # (a property that formats the name: read once)
        self.flush_timeout = flush_timeout_from_env() if flush_timeout is None else flush_timeout
        self.owner = f"{os.getpid()}-{new_event_id()}"
        self.pid = os.getpid()
        self.other_process = False  # set in a forked child (see _after_fork_in_child): no getpid() per task
        self._producer_overrides = dict(producer_config or {})
        # librdkafka's statistics: a producer left knowing no broker is replaced after `brokers.grace` s.
        self.brokers = NoBrokerWatch()
        self.reconnects = 0  # times the writer replaced such a producer (also `assetlog_producer_reconnects`)
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
        # Queued runs in publish() order: the n-th one ever queued has sequence number n, so the
        # writer knows a run's number by counting what it took (no (number, run) pair per run to
        # allocate, and for the collector to carry through its generations while the writer is busy).
        self._queue: deque[FinishedTaskRun | tuple[EncodedEvent, ...]] = deque()
        self._first_queued_at = 0.0  # time.monotonic() when a run went into an empty queue (commit window)
        # Set by whoever needs the queue committed now rather than at the end of the commit window:
        # flush(), wait_committed(), close(), and a queue of COMMIT_WINDOW_MAX_RUNS.
        self._commit_soon = threading.Event()
        self._seq = 0
        self._taken_seq = 0  # (writer thread) how many queued items it took into the outbox
        # Writer-thread state; snapshots below are read by flush() under _cond.
        self._committed_seq = 0
        self._durable_seq = 0  # set as soon as a commit returns, for wait_committed()
        self._unresolved: list[tuple[int, int]] = []
        self._failed: list[tuple[int, int, str]] = []
        self._brokers_down = False  # mirrored from the sender, read by flush()
        self._access_failure: str | None = None  # credentials refused or certificate untrusted (one line)
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
        if refusal is None and self._access_failure is not None:
            refusal = KafkaAccessError(self._access_failure)  # no event could ever be delivered: say why now
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
        check_metadata_size(key, values, self.limits, self._metadata_topic)

    def publish(self, run: FinishedTaskRun) -> None:
        """Queue one finished task run's events; returns at once while the outbox is healthy.

        Raises EventTooLarge for a run with an event Kafka would refuse, and OutboxUnavailable
        when the outbox cannot take the events (after waiting for room, if so configured)."""
        if self._closed or self._closing:
            raise RuntimeError("this Assetlog publisher is closed")
        if self._crash is not None:
            raise RuntimeError(f"the Assetlog publisher stopped: {self._crash}") from self._crash
        if self.other_process:
            raise RuntimeError(f"this Assetlog publisher belongs to process {self.pid}; create one per process")
        check_run_size(run, self.limits, self._encode_run, self.topics, self._identity)
        self._enqueue(run)

    def publish_events(self, events: Sequence[OutgoingEvent]) -> None:
        """Queue events built elsewhere (`events.events_for` with ids of the caller's choosing, as
        an integration translating another system's lineage does); same outbox, same guarantees.

        They are encoded here, in the caller's thread, so a record that does not fit its schema
        raises to the caller instead of being dropped by the writer thread.
        """
        if self._closed or self._closing:
            raise RuntimeError("this Assetlog publisher is closed")
        if self._crash is not None:
            raise RuntimeError(f"the Assetlog publisher stopped: {self._crash}") from self._crash
        memo: dict[int, bytes] = {}
        encoded = tuple((e.topic, e.key.encode(), encoder_for(e.event_type)(e.record, memo)) for e in events)
        if encoded:
            self._enqueue(encoded)

    def _enqueue(self, item: FinishedTaskRun | tuple[EncodedEvent, ...]) -> None:
        if self._gate.problem is not None:  # (what is held up is only described then: not per task run)
            self._gate.admit(f"the lineage events of task run {item.task_run_id} ({item.task_name})"
                             if isinstance(item, FinishedTaskRun) else f"{len(item)} prepared lineage events")
        with self._lock:
            self._seq += 1
            if not self._queue:
                self._first_queued_at = time.monotonic()
            self._queue.append(item)
        if not self._wakeup.is_set():
            self._wakeup.set()
        queued = len(self._queue)
        if queued >= COMMIT_WINDOW_MAX_RUNS and not self._commit_soon.is_set():
            self._commit_soon.set()  # enough runs to share a commit: the writer need not wait longer
        if queued >= MAX_QUEUED_RUNS:  # a bound of its own: not only above the window's run count
            self._commit_soon.set()  # the writer must take the queue now, whatever the window
            self._wait_for_room()

    def wait_committed(self, timeout: float = 30.0) -> str | None:
        """Wait until what was published before is committed to the outbox (durable: a crash no longer
        loses it), without waiting for Kafka; None when it is, else why not (the outbox's problem).

        Unlike `flush()` it does not make the writer hurry Kafka acknowledgements, which would cost
        every waiting caller a producer flush: a receiver acknowledging each event needs only this.
        """
        with self._lock:
            target = self._seq
        self._commit_soon.set()
        self._wakeup.set()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._durable_seq < target:
                if self._crash is not None:
                    raise RuntimeError(f"the Assetlog publisher stopped: {self._crash}") from self._crash
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    problem = self._gate.problem
                    return f"the outbox cannot be written: {problem or 'timed out'}"
                self._cond.wait(min(remaining, 0.1))
        return None

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
            self._commit_soon.set()
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
                    brokers_down = (self._brokers_down and now >= started + BROKERS_DOWN_GRACE) or bool(
                        self._access_failure)
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
        if self._access_failure is not None:
            return self._access_failure
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
        self._commit_soon.set()
        self._wakeup.set()
        self._thread.join(timeout=30)
        self._closed = True
        _open_publishers.discard(self)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread ----------------------------------------------------------------------------------


def open_publishers() -> list[Publisher]:
    """This process's publishers that are not closed."""
    return [p for p in list(_open_publishers) if not p.closed and not p.other_process]


def _after_fork_in_child() -> None:
    for publisher in list(_open_publishers):
        publisher.other_process = True


os.register_at_fork(after_in_child=_after_fork_in_child)


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
