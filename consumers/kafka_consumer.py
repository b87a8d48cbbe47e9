"""The one place the consumers build a Kafka consumer for the event topics.

Every reader of the events (a projection's group member, replay's shadow reader,
the metadata and lag readers) gets its consumer here, so the settings the
exactly-once design depends on are written once: offsets live in PostgreSQL
with the rows (Kafka's auto-commit and offset store off), only committed
transactions are read, and the end of a partition is reported. The topics check
("topics missing: ...; run `assetlog topics create` first") lives here too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer

from assetlog.broker_watch import STATS_INTERVAL_MS
from assetlog.config import Settings, Topics
from assetlog.consumers.membership import Slot, static_membership
from assetlog.errors import AssetlogError
from assetlog.kafka_access import AccessWatch

# What every event reader needs, whatever the user's pass-through settings say.
READ_REQUIRED: dict[str, object] = {
    "enable.auto.commit": False,  # offsets live in PostgreSQL, with the rows
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,  # how a reader knows a partition reached its end
    "isolation.level": "read_committed",
}

GROUP_DEFAULTS: dict[str, object] = {
    # A member that vanished (no restart) loses its partitions after this: short enough for
    # the others to take over soon, long enough for a busy 2-core machine.
    "session.timeout.ms": 10000,
}


class TopicsMissing(AssetlogError):
    """The event topics do not exist on this broker (or under this prefix)."""


def require_topics(known: Iterable[str], wanted: Iterable[str]) -> None:
    """Raise TopicsMissing naming every wanted topic the broker does not have."""
    present = set(known)
    missing = [t for t in wanted if t not in present]
    if missing:
        raise TopicsMissing(f"topics missing: {', '.join(missing)}; run `assetlog topics create` first")


def event_consumer(settings: Settings, group_id: str, *, auto_offset_reset: str = "earliest",
                   defaults: Mapping[str, object] | None = None, watch: AccessWatch | None = None) -> Any:
    """A consumer of the event topics under `group_id` (not subscribed yet) with the read settings above;
    also for the integrations that read a topic in batches and commit explicit offsets themselves
    (the OpenLineage exporter and Kafka ingest).

    With `watch`, the client's errors go to it (and librdkafka's log lines stay off stderr), so a
    refused password or certificate can be told in one line (`watch.list_topics`).
    """

    return Consumer(settings.kafka_client_config(
        defaults={"log_level": 3, **(defaults or {})},
        required={"group.id": group_id, "auto.offset.reset": auto_offset_reset, **READ_REQUIRED,
                  **(watch.client_settings() if watch else {})},
    ))


def group_consumer(settings: Settings, group_id: str, projection: str,
                   stats_cb: Any = None) -> tuple[Any, Slot | None]:
    """A projection's group member, with a static-membership slot, after checking the topics exist;
    `stats_cb` receives librdkafka's statistics (every `statistics.interval.ms`, from `consume()`).

    The event topics and their dead-letter topics must exist. The caller subscribes
    (with its rebalance callbacks) and releases the slot when it stops; if building
    fails, the slot is released here.
    """
    defaults = dict(GROUP_DEFAULTS)
    # Static membership: a process restarted in its slot gets its partitions back at once.
    slot = static_membership(settings, group_id, projection, defaults)
    try:
        watch = AccessWatch.for_settings(settings)
        if stats_cb is not None:  # e.g. the runner's `NoBrokerWatch` (a client that forgot every broker)
            defaults.update({"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": stats_cb})
        consumer = event_consumer(settings, group_id, defaults=defaults, watch=watch)
        topics = settings.topics
        require_topics(watch.list_topics(consumer, timeout=30),
                       [*topics.events, *(Topics.dead_letter(t) for t in topics.events)])
        # Connected: later Kafka errors (broker away, password rotated) are logged, one line each.
        watch.log_to(logging.getLogger("assetlog.consumers"))
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    return consumer, slot


def metadata_consumer(settings: Settings, purpose: str) -> tuple[Any, AccessWatch]:
    """A consumer for metadata and watermarks only (it never subscribes or commits)."""

    watch = AccessWatch.for_settings(settings)
    return Consumer(settings.kafka_client_config(
        defaults={"log_level": 3},
        required={"group.id": f"{settings.topic_prefix}.{purpose}", "enable.auto.commit": False,
                  **watch.client_settings()})), watch


def commit_only_consumer(settings: Settings, group_id: str, on_commit: Any, stats_cb: Any = None) -> Any:
    """A consumer that only commits offsets for `group_id`: it never subscribes, so it is never one of
    the group's members (a "simple" commit, which the broker accepts while the group has no members).
    `on_commit(error, partitions)` and `stats_cb` (a `NoBrokerWatch`) are called from its `poll()`."""

    watch = AccessWatch.for_settings(settings)
    statistics = {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": stats_cb} if stats_cb is not None else {}
    return Consumer(settings.kafka_client_config(
        defaults={"log_level": 3, **statistics},
        required={"group.id": group_id, "enable.auto.commit": False, "on_commit": on_commit,
                  **watch.client_settings()}))
