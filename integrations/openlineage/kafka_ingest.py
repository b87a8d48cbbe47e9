"""`assetlog ingest openlineage --from-kafka TOPIC`: the OpenLineage Kafka transport's topic, read in a group.

Each message value is one JSON event, handled by the same `Ingestor` as HTTP.
A refused event is copied to `<TOPIC>.dlq` with headers saying why (the consumers'
`DeadLetterPublisher`); offsets are committed only after every event of the batch
is durable in the outbox and every dead letter is acknowledged. When the outbox or
the dead-letter topic fails, the consumer rewinds to its last commit and retries
with backoff: re-reading an event writes the same Assetlog event ids.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from assetlog.config import Settings, Topics
from assetlog.consumers.batch import DeadLetter
from assetlog.consumers.dead_letters import DeadLetterError, DeadLetterPublisher
from assetlog.consumers.kafka_consumer import GROUP_DEFAULTS, event_consumer
from assetlog.consumers.retry import Backoff
from assetlog.integrations.openlineage.receiver import Ingestor
from assetlog.projections.events import Position
from assetlog.topics import admin_client

log = logging.getLogger("assetlog.integrations.openlineage")
DEAD_LETTER_REASON = "invalid-openlineage"


@dataclass
class KafkaIngestStats:
    messages: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    retries: int = 0


class NotDurable(Exception):
    """An event could not be stored; the batch is read again from the last commit."""


def next_offsets(messages: list[Any]) -> list[Any]:
    """Per partition, the offset after the last message of the batch (what a commit stores)."""

    after: dict[tuple[str, int], int] = {}
    for message in messages:
        if message.error() is None:
            where = (message.topic(), message.partition())
            after[where] = max(after.get(where, 0), message.offset() + 1)
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in sorted(after.items())]


class KafkaIngest:
    def __init__(self, settings: Settings, ingestor: Ingestor, topic: str, group: str | None = None) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.topic = topic
        self.group = group or f"{settings.topic_prefix}.openlineage-ingest"
        self.dead_letters = DeadLetterPublisher(settings, "openlineage-ingest")
        self.stats = KafkaIngestStats()

    def _consumer(self) -> Any:
        consumer = event_consumer(self.settings, self.group, defaults=GROUP_DEFAULTS)
        consumer.subscribe([self.topic])
        return consumer

    def ensure_dead_letter_topic(self) -> None:
        admin = admin_client(self.settings)
        dlq = Topics.dead_letter(self.topic)
        if dlq not in admin.list_topics(timeout=30).topics:
            for future in admin.create_topics([NewTopic(dlq, num_partitions=1, replication_factor=-1)]).values():
                try:
                    future.result()
                except Exception as exc:  # created meanwhile by another reader
                    log.debug("creating %s: %s", dlq, exc)

    def run(self, stop: threading.Event, progress: Callable[[str], None] = log.info) -> KafkaIngestStats:
        self.ensure_dead_letter_topic()
        backoff = Backoff()
        consumer = self._consumer()
        try:
            while not stop.is_set():
                messages = consumer.consume(500, 0.5)
                self.dead_letters.serve()  # its statistics: a dead-letter producer that knows no broker is replaced
                if not messages:
                    continue
                try:
                    batch = self._handle(messages)
                    offsets = next_offsets(messages)
                    if offsets:  # Kafka's offset store is off (event_consumer): commit these, explicitly
                        consumer.commit(offsets=offsets, asynchronous=False)
                    backoff.reset()
                    for name, count in batch.items():  # counted once committed: a retried batch counts once
                        setattr(self.stats, name, getattr(self.stats, name) + count)
                except (NotDurable, DeadLetterError) as exc:
                    self.stats.retries += 1
                    progress(f"retrying from the last committed offset: {exc}")
                    consumer.close()  # forget what was read: the new consumer starts at the committed offsets
                    if not backoff.wait(stop):
                        break
                    consumer = self._consumer()
        finally:
            consumer.close()
        return self.stats

    def _handle(self, messages: list[Any]) -> dict[str, int]:
        letters: list[DeadLetter] = []
        counts = {"messages": 0, "accepted": 0, "dead_lettered": 0}
        for message in messages:
            if message.error() is not None:
                log.debug("Kafka: %s", message.error())
                continue
            counts["messages"] += 1
            outcome = self.ingestor.ingest_bytes(message.value() or b"")
            if outcome.status == 201:
                counts["accepted"] += 1
            elif outcome.status == 400:
                position = Position(message.topic(), message.partition(), message.offset())
                letters.append(DeadLetter(position, message.key(), message.value(), DEAD_LETTER_REASON,
                                          outcome.reason or "refused"))
            else:
                raise NotDurable(outcome.reason or f"status {outcome.status}")
        if letters:
            self.dead_letters.publish(letters)
            counts["dead_lettered"] = len(letters)
        return counts
