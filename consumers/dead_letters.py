"""Copy skipped messages to `<topic>.dlq`, acknowledged before the offsets move.

The copy is flushed and every delivery confirmed before the batch's
transaction commits; if Kafka does not confirm, the batch is retried, so a
poison message is never both skipped and missing from its dead-letter topic.
A crash between the copy and the commit can copy it twice (the table keeps one
row): dead-letter topics are at-least-once. A message too large to copy with
the headers is copied without its value (header `assetlog.value.omitted`).

The producer lives as long as its consumer, so it is watched like the
consumer's own client (`assetlog/broker_watch.py`): once its statistics have
named no broker for the grace time, the next copy goes through a new producer
(the old one is purged: a copy it had not delivered is sent again). Its owner
calls `serve()` between batches, which hands it the statistics (and keeps
librdkafka's queue of them from growing while no poison message comes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from assetlog.broker_watch import STATS_INTERVAL_MS, NoBrokerWatch
from assetlog.config import Settings
from assetlog.consumers.batch import DeadLetter

log = logging.getLogger("assetlog.consumers")

HEADER_PREFIX = "assetlog."
OMIT_KEY_BYTES = 1024  # a copy too large to send keeps a key up to this size


class DeadLetterError(Exception):
    """Kafka did not acknowledge a dead-letter copy; the batch must not commit."""


def dead_letter_headers(letter: DeadLetter, projection: str) -> list[tuple[str, bytes]]:
    """Headers naming the error and where the message came from."""
    values = {
        "error.reason": letter.reason,
        "error.detail": letter.detail,
        "original.topic": letter.position.topic,
        "original.partition": str(letter.position.partition),
        "original.offset": str(letter.position.offset),
        "projection": projection,
    }
    return [(HEADER_PREFIX + name, value.encode("utf-8")) for name, value in values.items()]


class DeadLetterPublisher:
    """An idempotent producer for dead letters, created on the first poison message."""

    def __init__(self, settings: Settings, projection: str, timeout: float = 30.0) -> None:
        self.settings = settings
        self.projection = projection
        self.timeout = timeout
        self.brokers = NoBrokerWatch()  # librdkafka's statistics: does the producer still know a broker?
        self.reconnects = 0  # times a producer that knew no broker was replaced
        self._producer = None
        self._lock = threading.Lock()  # publish() and serve() never use the producer at once

    def _get(self):
        if self._producer is not None and self.brokers.wedged():
            self._replace()
        if self._producer is None:
            self._producer = Producer(self.settings.kafka_client_config(
                defaults={"linger.ms": 5, "log_level": 3,
                          "statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self.brokers},
                required={"enable.idempotence": True, "acks": "all"},
            ))
        return self._producer

    def _replace(self) -> None:
        """The producer has known no broker for the grace time and will not reconnect: drop it (what it
        had not delivered is purged; those letters are not `delivered`, so the new producer copies them)."""
        log.warning("%s: the dead-letter producer has known no broker for %.0fs (librdkafka dropped them all, "
                    "e.g. around a broker restart, and will not reconnect); replacing it", self.projection,
                    self.brokers.grace)
        old, self._producer = self._producer, None
        self.reconnects += 1
        self.brokers.reset()
        try:
            old.purge()  # never flushed: nothing can reach a broker
        except Exception as exc:  # a wedged client may fail to purge; it is dropped anyway
            log.debug("purging the wedged dead-letter producer failed: %s", exc)

    def serve(self) -> None:
        """Serve the producer's statistics (cheap; the owner calls it between batches). Skipped while a
        copy is under way: publish() serves them itself then."""
        if self._producer is not None and self._lock.acquire(blocking=False):
            try:
                if self._producer is not None:
                    self._producer.poll(0)
            finally:
                self._lock.release()

    def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Copy every not-yet-delivered letter; raise DeadLetterError unless all are acknowledged."""
        pending = [letter for letter in letters if not letter.delivered]
        if not pending:
            return
        with self._lock:
            self._publish(pending)

    def _publish(self, pending: list[DeadLetter]) -> None:
        producer = self._get()
        errors: list[str] = []
        too_large: list[DeadLetter] = []
        self._send(producer, pending, errors, too_large, whole=True)
        remaining = producer.flush(self.timeout)
        if too_large and not remaining:
            # A message near Kafka's size limit plus our headers does not fit: copy it without its
            # value (and key, if big). The dead_letters row keeps both verbatim, and the original
            # stays in its topic (retention is unlimited), which the headers point at.
            retry, too_large = too_large, []
            self._send(producer, retry, errors, too_large, whole=False)
            remaining = producer.flush(self.timeout)
        if remaining or errors or too_large or not all(letter.delivered for letter in pending):
            raise DeadLetterError(
                f"{remaining} dead letters unacknowledged after {self.timeout}s; errors: {(errors or too_large)[:3]}"
            )

    def _send(self, producer, letters: Sequence[DeadLetter], errors: list[str], too_large: list[DeadLetter],
              whole: bool) -> None:
        def on_delivery(letter: DeadLetter):
            def callback(error, _message) -> None:
                if error is None:
                    letter.delivered = True
                elif whole and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    too_large.append(letter)
                else:
                    errors.append(f"{letter.dead_letter_topic}: {error}")
            return callback

        for letter in letters:
            headers = dead_letter_headers(letter, self.projection)
            key, value = letter.key, letter.value
            if not whole:
                headers.append((HEADER_PREFIX + "value.omitted", (
                    f"too large to copy with its headers ({len(value or b'')} bytes of value, "
                    f"{len(key or b'')} of key): see the original message").encode()))
                key = key if key is None or len(key) <= OMIT_KEY_BYTES else None
                value = None
            while True:
                try:
                    producer.produce(letter.dead_letter_topic, key=key, value=value, headers=headers,
                                     on_delivery=on_delivery(letter))
                    break
                except BufferError:
                    producer.poll(0.1)
                except KafkaException as exc:  # refused before sending (librdkafka's own size limit)
                    if whole and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                        too_large.append(letter)
                    else:
                        errors.append(f"{letter.dead_letter_topic}: {exc.args[0]}")
                    break

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self.timeout)
                self._producer = None
