"""Copy skipped messages to `<topic>.dlq`, acknowledged before the offsets move.

The copy is flushed and every delivery confirmed before the batch's
transaction commits; if Kafka does not confirm, the batch is retried, so a
poison message is never both skipped and missing from its dead-letter topic.
A crash between the copy and the commit can copy it twice (the table keeps one
row): dead-letter topics are at-least-once.
"""

from __future__ import annotations

from collections.abc import Sequence

from assetlog.config import Settings
from assetlog.consumers.batch import DeadLetter

HEADER_PREFIX = "assetlog."


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
        self._producer = None

    def _get(self):
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self.settings.kafka_client_config(
                defaults={"linger.ms": 5, "log_level": 3},
                required={"enable.idempotence": True, "acks": "all"},
            ))
        return self._producer

    def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Copy every not-yet-delivered letter; raise DeadLetterError unless all are acknowledged."""
        pending = [letter for letter in letters if not letter.delivered]
        if not pending:
            return
        producer = self._get()
        errors: list[str] = []

        def on_delivery(letter: DeadLetter):
            def callback(error, _message) -> None:
                if error is None:
                    letter.delivered = True
                else:
                    errors.append(f"{letter.dead_letter_topic}: {error}")
            return callback

        for letter in pending:
            while True:
                try:
                    producer.produce(letter.dead_letter_topic, key=letter.key, value=letter.value,
                                     headers=dead_letter_headers(letter, self.projection),
                                     on_delivery=on_delivery(letter))
                    break
                except BufferError:
                    producer.poll(0.1)
        remaining = producer.flush(self.timeout)
        if remaining or errors or not all(letter.delivered for letter in pending):
            raise DeadLetterError(
                f"{remaining} dead letters unacknowledged after {self.timeout}s; errors: {errors[:3]}"
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout)
            self._producer = None
