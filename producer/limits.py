"""What Kafka will accept, learnt when a publisher starts: the topics exist, and how large an event may be.

An event larger than the broker accepts would sit in the outbox forever, so it is
refused where it is made (`add_asset_metadata`, task end) with an error naming the
asset, its size and the limit. The limit is the smaller of the producer's
`message.max.bytes` (known at once) and each topic's `max.message.bytes` (asked
from the brokers when the publisher starts, without waiting on a broker that is
down). Checking must cost a task run next to nothing: a run is encoded to
measure it only when a cheap upper bound of its size comes near the limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from assetlog.config import Settings
from assetlog.kafka_access import AccessWatch
from assetlog.producer.event_builders import EventIdSource, FinishedTaskRun, ProducerIdentity
from assetlog.producer.recording_errors import EventTooLarge, MissingTopics

LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes
# Room kept for what Kafka adds around a record's key and value (record and batch headers).
RECORD_OVERHEAD = 512
# Bytes an event holds beyond the strings counted by `_size_bound` (ids, times, the producer).
_FIXED_EVENT_BYTES = 4096
# A just-created topic may be unknown to a broker for a moment: ask again this long.
_MISSING_RECHECK_SECONDS = 3.0


@dataclass
class KafkaLimits:
    """The largest event (key + value bytes) each topic accepts; `missing` topics, once known."""

    producer_max: int
    topic_max: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    _smallest: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def smallest(self) -> int:
        """The smallest limit of any topic (what a quick check compares with)."""
        cached = self._smallest
        if cached is None or cached[0] != len(self.topic_max):
            low = min([self.producer_max, *self.topic_max.values()]) - RECORD_OVERHEAD
            self._smallest = cached = (len(self.topic_max), low)
        return cached[1]

    def for_topic(self, topic: str) -> int:
        return min(self.producer_max, self.topic_max.get(topic, self.producer_max)) - RECORD_OVERHEAD

    def explain(self, topic: str) -> str:
        parts = [f"the producer's message.max.bytes={self.producer_max}"]
        if topic in self.topic_max:
            parts.append(f"topic {topic}'s max.message.bytes={self.topic_max[topic]}")
        return f"{' and '.join(parts)}, less {RECORD_OVERHEAD} bytes of record overhead"


def producer_max_bytes(config: Mapping[str, object]) -> int:
    try:
        return int(str(config.get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES)))
    except ValueError:
        return LIBRDKAFKA_MESSAGE_MAX_BYTES


class _QuietLog:
    """librdkafka's own lines (a down broker, once per reconnect) go to debug logging."""

    def log(self, level: int, fmt: str, *args: object) -> None:
        logging.getLogger("assetlog.producer").debug(fmt, *args)


class TopicCheck:
    """Asks the brokers for the event topics' settings, asynchronously (admin futures)."""

    def __init__(self, settings: Settings, topics: tuple[str, ...]) -> None:
        self.settings = settings
        self.topics = topics
        self.brokers_down = False
        self.access = AccessWatch(settings.kafka_bootstrap or "")
        self.admin = AdminClient(settings.kafka_client_config(defaults={"log_level": 3},
                                                              required={"error_cb": self._on_error,
                                                                        "logger": _QuietLog()}))
        self._asked_at = time.monotonic()
        self._futures = self._ask(topics)
        self._unknown: set[str] = set()
        self.result: tuple[dict[str, int], list[str]] | None = None

    def _on_error(self, err: Any) -> None:
        self.access(err)
        if self.access.failure is not None:
            self.brokers_down = True  # as good as down: no answer will come
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self.brokers_down = True

    def _ask(self, topics: tuple[str, ...]) -> dict[Any, Any]:
        return self.admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics],
                                           request_timeout=30)

    def poll(self) -> tuple[dict[str, int], list[str]] | None:
        """(topic -> max.message.bytes, missing topics) once the brokers answered, else None."""
        if self.result is not None:
            return self.result
        self.admin.poll(0)  # serves the error callback
        if not all(f.done() for f in self._futures.values()):
            return None
        limits: dict[str, int] = {}
        unknown: list[str] = []
        for resource, future in self._futures.items():
            try:
                entry = future.result().get("max.message.bytes")
                if entry is not None and entry.value is not None:
                    limits[resource.name] = int(entry.value)
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    unknown.append(resource.name)
                # anything else (no right to describe, ...): the producer's limit alone applies
            except ValueError:
                pass
        if unknown and time.monotonic() - self._asked_at < _MISSING_RECHECK_SECONDS:
            time.sleep(0.2)
            self._futures = self._ask(tuple(unknown))
            self._unknown.update(unknown)
            self._partial = limits
            return None
        limits.update(getattr(self, "_partial", {}))
        self.result = (limits, sorted(unknown))
        return self.result


def missing_topics_error(settings: Settings, missing: list[str]) -> MissingTopics:
    return MissingTopics(
        f"Kafka at {settings.kafka_bootstrap} has no topic {', '.join(missing)}: create the event topics with "
        f"`assetlog topics create` (ASSETLOG_TOPIC_PREFIX={settings.topic_prefix}), or set the prefix "
        "your topics use")


def check_metadata_size(key: str, values: Mapping[str, str], limits: KafkaLimits, topic: str) -> None:
    """Refuse metadata whose event would be over the limit, at the `add_asset_metadata` call."""
    chars = len(key) + _FIXED_EVENT_BYTES
    for k, v in values.items():  # a plain loop: it runs at every add_asset_metadata call
        chars += len(k) + len(v) + 4
    if 4 * chars <= limits.smallest:
        return  # even all-4-byte characters fit: the usual case, no encoding
    limit = limits.for_topic(topic)
    size = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in values.items()) + len(key.encode())
    if size + _FIXED_EVENT_BYTES > limit:
        raise EventTooLarge(
            f"metadata for asset {key!r} is {size:,} bytes; one lineage event may be at most {limit:,} bytes "
            f"({limits.explain(topic)}): keep large values elsewhere and record a reference to them")


def _size_bound(run: FinishedTaskRun) -> int:
    """Characters of every string of the run that any one event can carry; times 4 bounds its UTF-8
    bytes. It runs at the end of every task run: what the runs of one task share (assets, upstream
    and texts, the same objects run after run) is counted once and kept for the next run."""
    global _LAST_SHARED
    last = _LAST_SHARED  # one tuple, read and replaced whole: task runs on other threads may replace it
    if (last[0] is run.assets and last[1] is run.upstream and last[2] is run.task_name
            and last[3] is run.flow_name and last[4] is run.by and last[5] is run.task_version):
        chars = last[6]
    else:
        chars = _shared_chars(run)
        _LAST_SHARED = (run.assets, run.upstream, run.task_name, run.flow_name, run.by, run.task_version, chars)
    for value in run.metadata.values():
        chars += len(value)
    if run.error is not None:
        chars += len(run.error[0]) + len(run.error[1])
    return chars


def _shared_chars(run: FinishedTaskRun) -> int:
    chars = 0
    for asset in run.assets:
        chars += len(asset.key)
        if asset.properties is not None:
            chars += _properties_chars(asset)
    for up in run.upstream:
        chars += 2 * len(up.asset.key)
        if up.asset.properties is not None:
            chars += _properties_chars(up.asset)
    for text in (run.by, run.task_name, run.flow_name, run.task_version):
        if text:
            chars += len(text)
    return chars


_LAST_SHARED: tuple[Any, ...] = (None,) * 6 + (0,)


def _properties_chars(asset: Any) -> int:
    properties = asset.properties
    return (len(properties.name or "") + len(properties.url or "") + len(properties.description or "")
            + sum(len(owner) + 3 for owner in properties.owners or ()))


def check_run_size(run: FinishedTaskRun, limits: KafkaLimits, encode: Callable[..., list[tuple[str, bytes, bytes]]],
                   topics: Any, identity: ProducerIdentity) -> None:
    """Refuse a finished run any of whose events would be over the limit, naming the asset."""
    if 4 * _size_bound(run) + _FIXED_EVENT_BYTES <= limits.smallest:
        return
    for topic, key, value in encode(run, topics, identity, EventIdSource()):
        size, limit = len(key) + len(value), limits.for_topic(topic)
        if size > limit:
            raise EventTooLarge(
                f"the lineage event for asset {key.decode(errors='replace')!r} on {topic} would be {size:,} bytes; "
                f"one event may be at most {limit:,} bytes ({limits.explain(topic)}): task run {run.task_run_id} "
                f"({run.task_name}) is not recorded; keep large metadata elsewhere and record a reference to it")
