"""Create the event topics so that no event is ever compacted or aged out.

Kafka is Assetlog's source of truth: projections are rebuilt by replaying the
topics, so retention must be unlimited and cleanup must never compact. An
existing topic with settings that would lose events is refused, naming them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from assetlog.config import Settings, Topics
from assetlog.consumers.retry import Backoff
from assetlog.errors import AssetlogError
from assetlog.kafka_access import AccessWatch

MAX_PARTITIONS = 10_000  # per event topic: the bound of every --partitions option

# Settings that keep every event forever; anything else would make replay lossy.
REQUIRED_TOPIC_CONFIG = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
}


class TopicError(AssetlogError):
    """An event topic exists with settings that would lose events, or cannot be created."""


def all_topics(topics: Topics) -> list[str]:
    return [*topics.events, *(Topics.dead_letter(t) for t in topics.events)]


def admin_client(settings: Settings, watch: AccessWatch | None = None):
    return AdminClient(settings.kafka_client_config(
        defaults={"log_level": 3}, required=watch.client_settings() if watch else None))


def list_topic_names(settings: Settings, timeout: float = 30.0) -> tuple[object, set[str]]:
    """An admin client and the broker's topics; refused credentials or certificates fail at once."""
    admin, _watch, names = _watched_admin(settings, timeout)
    return admin, names


def _watched_admin(settings: Settings, timeout: float) -> tuple[object, AccessWatch, set[str]]:
    """An admin client, the watch of its errors (for later listings) and the broker's topics."""
    watch = AccessWatch.for_settings(settings)
    admin = admin_client(settings, watch)
    return admin, watch, set(watch.list_topics(admin, timeout))


def delete_topics_under(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Delete every topic of the settings' prefix: `<prefix>` itself and all `<prefix>.*`; returns them.

    For the scratch prefixes of tests and benchmarks, which also make topics beside the six event
    topics (`<prefix>.<tail>.*`, an OpenLineage topic). Deleting only the six leaked the rest, and a
    broker that must load thousands of leaked partitions takes minutes to start. Best effort: a topic
    already gone is not an error. Never point it at a prefix whose events are the source of truth.
    """
    prefix = settings.topic_prefix
    admin, existing = list_topic_names(settings, timeout)
    doomed = sorted(t for t in existing if t == prefix or t.startswith(prefix + "."))
    delete_topic_names(admin, doomed, timeout)
    return doomed


def delete_topic_names(admin, names: list[str], timeout: float = 30.0) -> None:
    """Delete these topics and wait (bounded) for the broker's answer; a topic already gone, or never
    created, is not an error. The caller holds `admin` meanwhile: a client freed while a deletion is
    in flight never answers."""
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout).values():
            try:
                future.result(timeout=timeout * 2)
            except KafkaException:  # already deleted by someone else, or never there: the outcome wanted
                pass


def ensure_topics(settings: Settings, partitions: int = 3, timeout: float = 30.0) -> dict[str, str]:
    """Create missing topics and verify existing ones; returns topic -> 'created' | 'exists'."""

    if partitions < 1:
        raise TopicError(f"--partitions must be at least 1, got {partitions}")
    admin, watch, existing = _watched_admin(settings, timeout)
    wanted = all_topics(settings.topics)
    missing = [t for t in wanted if t not in existing]
    result = {t: "exists" for t in wanted if t in existing}
    if missing:
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=-1, config=dict(REQUIRED_TOPIC_CONFIG))
             for t in missing],
            operation_timeout=timeout, request_timeout=timeout,
        )
        for topic, future in futures.items():
            try:
                future.result()
                result[topic] = "created"
            except KafkaException as exc:
                error = exc.args[0]
                if getattr(error, "code", lambda: None)() == _topic_exists_code():
                    result[topic] = "exists"
                    existing.add(topic)
                else:
                    raise TopicError(f"cannot create topic {topic}: {error}") from exc
    verify_topic_settings(admin, [t for t in wanted if result[t] == "exists"], timeout)
    wait_until_listed(watch, admin, [t for t in wanted if result[t] == "created"], partitions, timeout)
    return {t: result[t] for t in wanted}


def wait_until_listed(watch: AccessWatch, admin, topics: Iterable[str], partitions: int,
                      timeout: float = 30.0) -> None:
    """Return once the broker's metadata lists each new topic with its partitions.

    Kafka answers CreateTopics once the controller has made them; the brokers learn of them a moment
    later, and until then a listing or a describe does not know them (Kafka's admin API says so). So
    what `topics create` reports as created can be used at once: a script that creates the topics,
    then looks at them, met "Unknown topic or partition" under load. Listed through `watch`, as every
    listing here: refused credentials and a broker gone away are named in one line.
    """
    pending = set(topics)
    deadline = time.monotonic() + timeout
    while pending:
        listed = watch.list_topics(admin, max(0.1, deadline - time.monotonic()))
        pending = {t for t in pending if t not in listed or listed[t].error is not None
                   or len(listed[t].partitions) != partitions}
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicError(f"created {', '.join(sorted(pending))}, but the broker does not list "
                             f"{'it' if len(pending) == 1 else 'them'} with {partitions} partition(s) after "
                             f"{timeout:.0f}s")
        time.sleep(0.05)


def _topic_exists_code() -> int:
    return KafkaError.TOPIC_ALREADY_EXISTS


def verify_topic_settings(admin, topics: Iterable[str], timeout: float = 30.0) -> None:
    """Raise TopicError naming the first setting of an existing topic that would lose events."""

    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
    if not resources:
        return
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        entries = _describe_with_retry(admin, resource, future, timeout)
        for setting, required in REQUIRED_TOPIC_CONFIG.items():
            entry = entries.get(setting)
            actual = entry.value if entry is not None else None
            if setting == "cleanup.policy":
                ok = actual is not None and "compact" not in actual and "delete" in actual
            else:
                ok = actual == required
            if not ok:
                raise TopicError(
                    f"topic {resource.name} has {setting}={actual}, which would lose events "
                    f"(Assetlog needs {setting}={required}); fix it with kafka-configs --alter "
                    f"--entity-type topics --entity-name {resource.name} --add-config {setting}={required}"
                )


def _describe_with_retry(admin, resource, future, timeout: float) -> dict:
    """A topic created a moment ago may not be known to every broker yet: retry briefly."""

    deadline = time.monotonic() + min(timeout, 10.0)
    backoff = Backoff(initial=0.1, maximum=1.0)
    while True:
        try:
            return future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise TopicError(f"cannot read the settings of topic {resource.name}: {exc.args[0]}") from exc
        time.sleep(backoff.next_delay())
        future = admin.describe_configs([resource], request_timeout=timeout)[resource]
