"""Where the topics end, and where each projection stands: the positions replay and `status` compare.

Kafka's end offsets (high watermarks) are read with a throw-away consumer
that never joins a group; the projections' positions are the offsets stored
in PostgreSQL with their rows (`consumer_offsets`), the only ones that count.
"""

from __future__ import annotations

from assetlog.config import Settings
from assetlog.errors import AssetlogError
from assetlog.kafka_access import AccessWatch

Partition = tuple[str, int]
Offsets = dict[Partition, int]


class TopicsMissing(AssetlogError):
    """The event topics do not exist on this broker (or under this prefix)."""


def metadata_consumer(settings: Settings, purpose: str):
    """A consumer for metadata and watermarks only (it never subscribes or commits)."""
    from confluent_kafka import Consumer

    watch = AccessWatch(settings.require_kafka())
    return Consumer(settings.kafka_client_config(
        defaults={"log_level": 3},
        required={"group.id": f"{settings.topic_prefix}.{purpose}", "enable.auto.commit": False,
                  **watch.client_settings()})), watch


def event_partitions(settings: Settings, timeout: float = 30.0) -> list[Partition]:
    """Every partition of the three event topics; missing topics are named in one line."""
    from confluent_kafka import KafkaException

    consumer, watch = metadata_consumer(settings, "metadata")
    try:
        try:
            known = consumer.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            consumer.poll(0)  # serves the error callback, which holds an access failure's reason
            watch.raise_if_failed()
            raise AssetlogError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc.args[0]}") from exc
        missing = [t for t in settings.topics.events if t not in known]
        if missing:
            raise TopicsMissing(f"topics missing: {', '.join(missing)}; run `assetlog topics create` first")
        return sorted((t, p) for t in settings.topics.events for p in known[t].partitions)
    finally:
        consumer.close()


def end_offsets(settings: Settings, partitions: list[Partition], timeout: float = 30.0) -> Offsets:
    """The next offset Kafka will write in each partition, read fresh from the broker."""
    from confluent_kafka import TopicPartition

    consumer, _ = metadata_consumer(settings, "metadata")
    try:
        return {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=timeout, cached=False)[1]
                for t, p in partitions}
    finally:
        consumer.close()
