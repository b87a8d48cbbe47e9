"""Where the topics end, and where each projection stands: the positions replay and `status` compare.

Kafka's end offsets (high watermarks) are read with a throw-away consumer
that never joins a group; the projections' positions are the offsets stored
in PostgreSQL with their rows (`consumer_offsets`), the only ones that count.
"""

from __future__ import annotations

from confluent_kafka import TopicPartition

from assetlog.config import Settings
from assetlog.consumers.kafka_consumer import TopicsMissing, metadata_consumer, require_topics

Partition = tuple[str, int]
Offsets = dict[Partition, int]

__all__ = ["Offsets", "Partition", "TopicsMissing", "end_offsets", "event_partitions", "metadata_consumer"]


def event_partitions(settings: Settings, timeout: float = 30.0) -> list[Partition]:
    """Every partition of the three event topics; missing topics are named in one line."""
    consumer, watch = metadata_consumer(settings, "metadata")
    try:
        known = watch.list_topics(consumer, timeout)
        require_topics(known, settings.topics.events)
        return sorted((t, p) for t in settings.topics.events for p in known[t].partitions)
    finally:
        consumer.close()


def end_offsets(settings: Settings, partitions: list[Partition], timeout: float = 30.0) -> Offsets:
    """The next offset Kafka will write in each partition, read fresh from the broker."""

    consumer, _ = metadata_consumer(settings, "metadata")
    try:
        return {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=timeout, cached=False)[1]
                for t, p in partitions}
    finally:
        consumer.close()
