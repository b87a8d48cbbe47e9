"""The Kafka side of the publisher: an idempotent producer and its delivery reports.

Only the publisher's writer thread calls it. Messages are handed over a whole
outbox row at a time (`produce_batch`). librdkafka reports only failed
deliveries (`delivery.report.only.error`): a per-message Python callback for
every success would cost more than the produce itself. Success is known at a
barrier instead: once the producer's queue is empty (`len(producer) == 0`)
every message handed over is either acknowledged or reported failed, so the
rows of that "epoch" without a failure are delivered. Epochs are capped so
that, even under constant load, rows are settled (and deleted) regularly.

The producer's statistics go to a `NoBrokerWatch` (`assetlog/broker_watch.py`):
a client that has known no broker for its grace time never reconnects, so the
writer replaces it (`restart`) as it does after a fatal error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer

from assetlog.broker_watch import STATS_INTERVAL_MS, NoBrokerWatch
from assetlog.config import Settings
from assetlog.kafka_access import AccessWatch
from assetlog.producer.outbox import Message

log = logging.getLogger("assetlog.producer")

# Preferences a user may override with ASSETLOG_KAFKA_* (see README).
PRODUCER_DEFAULTS: dict[str, object] = {
    "client.id": "assetlog-producer",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "compression.type": "lz4",
    # Give up on a message after 30 s; the outbox keeps it and it is sent again later.
    "message.timeout.ms": 30000,
    "socket.timeout.ms": 10000,
    "socket.connection.setup.timeout.ms": 10000,
    "queue.buffering.max.messages": 100000,
    "delivery.report.only.error": True,
}
# What "no event lost, none reordered by retries" needs; not overridable.
PRODUCER_REQUIRED: dict[str, object] = {"enable.idempotence": True, "acks": "all"}

UNSENT, IN_FLIGHT, FAILED = "unsent", "in-flight", "failed"
# Events handed to librdkafka before waiting for the barrier: bounds memory and how long
# delivered rows wait to be deleted, at the price of a short pause per epoch.
MAX_EPOCH_EVENTS = 20_000
# Messages per produce_batch call (see KafkaSender.send).
PRODUCE_SLICE = 256


def _permanent_codes() -> frozenset[int]:
    """Delivery errors no retry can fix: the message itself is refused."""
    names = ("MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD", "INVALID_MSG_SIZE")
    return frozenset(getattr(KafkaError, name) for name in names if hasattr(KafkaError, name))


class Row:
    """One outbox row on its way to Kafka: its messages, those whose delivery failed (to retry),
    and those Kafka refused for good (`undeliverable`)."""

    __slots__ = ("attempts", "committed_at", "error", "events", "failed", "id", "messages", "permanent_error",
                 "retry_at", "seq", "state", "topic", "undeliverable")
    PERMANENT: frozenset[int] = frozenset()

    def __init__(self, row_id: int, topic: str, events: int, messages: list[Message] | None, seq: int,
                 attempts: int = 0) -> None:
        self.id = row_id
        self.topic = topic
        self.events = events
        self.messages = messages
        self.seq = seq  # the publish() sequence number it was committed with (0: adopted)
        self.attempts = attempts
        self.state = UNSENT
        self.failed: list[Message] = []
        self.undeliverable: list[Message] = []
        self.error: Any = None
        self.permanent_error: Any = None
        self.retry_at = 0.0
        self.committed_at = 0.0  # time.monotonic() of its commit by this publisher (0: adopted)

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            return
        if err.code() in Row.PERMANENT:
            self.undeliverable.append((msg.key() or b"", msg.value() or b""))
            self.permanent_error = err
        else:
            self.failed.append((msg.key() or b"", msg.value() or b""))
            self.error = err


class _KafkaLogRelay:
    """librdkafka's log lines go to Python logging at DEBUG: a down broker is reported
    once, as a warning, by the error callback instead of a line per reconnect."""

    def log(self, level: int, fmt: str, *args: object) -> None:
        log.debug(fmt, *args)


class _Refused:
    """Stands in for the confluent-kafka Message of a message produce() refused at once."""

    def __init__(self, message: dict[str, bytes]) -> None:
        self._message = message

    def key(self) -> bytes:
        return self._message["key"]

    def value(self) -> bytes:
        return self._message["value"]


def describe(error: Any) -> str:
    if error is None:
        return "unknown error"
    name = getattr(error, "name", None)
    text = error.str() if hasattr(error, "str") else str(error)
    return f"{name()}: {text}" if callable(name) else str(text)


class KafkaSender:
    """An idempotent producer plus the rows of its current epoch."""

    def __init__(self, settings: Settings, overrides: Mapping[str, object] | None = None,
                 brokers: NoBrokerWatch | None = None) -> None:
        self.settings = settings
        self.overrides = dict(overrides or {})
        self.brokers = NoBrokerWatch() if brokers is None else brokers  # librdkafka's statistics: a broker known?
        self.brokers_down = False
        self._warned = False
        self.access = AccessWatch(settings.kafka_bootstrap or "")  # refused credentials, untrusted certificate
        self.fatal: Any = None
        self.epoch: list[Row] = []
        self.epoch_events = 0
        self.max_epoch_events = MAX_EPOCH_EVENTS
        self.producer = self._make_producer()

    def _make_producer(self) -> Any:
        if not Row.PERMANENT:
            Row.PERMANENT = _permanent_codes()
        config = self.settings.kafka_client_config(
            # `statistics.interval.ms` a user sets (0: no statistics, no watch) wins, like any preference.
            defaults={**PRODUCER_DEFAULTS, "statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self.brokers,
                      **self.overrides},
            required={**PRODUCER_REQUIRED, "error_cb": self._on_error, "logger": _KafkaLogRelay()},
        )
        queue_limit = int(str(config.get("queue.buffering.max.messages", 100000)))
        self.max_epoch_events = max(1, min(MAX_EPOCH_EVENTS, queue_limit // 2))
        return Producer(config)

    def _on_error(self, err: Any) -> None:
        if self.access.failure is None:
            self.access(err)
            if self.access.failure is not None:  # the writer says it, once (or the publisher refuses to start)
                self.brokers_down = True
                return
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.brokers_down = True  # (also when the broker closed an idle connection)
        elif err.fatal():
            log.error("the Kafka producer hit a fatal error (%s); starting a new one", err)
            self.fatal = err
        else:
            log.debug("Kafka: %s", err)

    @property
    def has_room(self) -> bool:
        return self.epoch_events < self.max_epoch_events

    def send(self, row: Row) -> None:
        """Hand a row's messages to librdkafka, a slice at a time (a full local queue is waited out
        briefly). `produce_batch` takes a dict per message: built for a whole row (thousands of
        messages) they all live at once, outlast the collector's young generation and drive full
        collections of the process's heap; a slice's dicts die young."""
        messages = row.messages
        assert messages is not None
        row.state, row.failed, row.error, row.undeliverable = IN_FLIGHT, [], None, []
        self.epoch.append(row)
        self.epoch_events += row.events
        for start in range(0, len(messages), PRODUCE_SLICE):
            self._produce(row, [{"key": key, "value": value} for key, value in messages[start:start + PRODUCE_SLICE]])

    def _produce(self, row: Row, batch: list[dict[str, Any]]) -> None:
        for _ in range(200):
            try:
                queued = self.producer.produce_batch(row.topic, batch, on_delivery=row.on_delivery)
            except BufferError:
                queued = 0
                for message in batch:
                    message.setdefault("_error", KafkaError(KafkaError._QUEUE_FULL))
            if queued == len(batch):
                return
            retry = []
            for message in batch:
                error = message.pop("_error", None)
                if error is None:
                    continue
                if error.code() == KafkaError._QUEUE_FULL:
                    retry.append(message)
                else:  # refused outright (e.g. too large): a failed delivery
                    row.on_delivery(error, _Refused(message))
            batch = retry
            if not batch:
                return
            self.producer.poll(0.05)
        for message in batch:
            row.on_delivery(KafkaError(KafkaError._QUEUE_FULL), _Refused(message))

    def serve(self, hurry: bool) -> list[Row]:
        """Serve delivery reports; returns the rows of the epoch once it is over (else [])."""
        if hurry and self.epoch:
            self.producer.flush(0.02)  # flush() ignores linger.ms: acknowledgements come sooner
        else:
            self.producer.poll(0)
        if self.brokers_down and self.epoch and not self._warned:  # said once, while events wait
            log.warning("Kafka at %s is unreachable; lineage events wait in the outbox %s",
                        self.settings.kafka_bootstrap, self.settings.outbox_dir)
            self._warned = True
        if not self.epoch or len(self.producer) > 0:
            return []
        done, self.epoch, self.epoch_events = self.epoch, [], 0
        if any(not row.failed for row in done):
            if self._warned:
                log.warning("Kafka at %s is reachable again", self.settings.kafka_bootstrap)
            self.brokers_down = self._warned = False
        return done

    @property
    def wedged(self) -> bool:
        """The producer has known no broker for the watch's grace time: it will never deliver again."""
        return self.brokers.wedged()

    def restart(self) -> list[Row]:
        """After a fatal error, or once wedged: drop this producer (its rows fail, to be retried) and
        make a new one."""
        self.fatal = None
        done = self.abandon()
        self.brokers.reset()
        self.producer = self._make_producer()
        return done

    def abandon(self) -> list[Row]:
        """Purge what is queued; returns the rows of the epoch, each marked failed where purged.

        If some reports could not be served, no row of the epoch can be called delivered:
        all are marked failed (a resend at worst duplicates, consumers dedupe on event_id).
        """
        self.producer.purge()
        self.producer.flush(1.0)  # serve the purge reports
        certain = len(self.producer) == 0
        done, self.epoch, self.epoch_events = self.epoch, [], 0
        if not certain:
            for row in done:
                if not row.failed and row.messages is not None:
                    row.failed, row.undeliverable = list(row.messages), []
                    row.error = KafkaError(KafkaError._PURGE_QUEUE)
        return done
