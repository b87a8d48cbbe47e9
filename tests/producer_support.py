"""Helpers for the producer tests: run code against an isolated world's topics, then
read back and decode everything Kafka holds for that world."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from assetlog.config import Settings
from assetlog.producer import Publisher, publishing
from assetlog.schemas import decode


@dataclass(frozen=True)
class Published:
    """One message as the broker holds it, decoded."""

    topic: str
    partition: int
    offset: int
    key: str
    event_type: str
    record: dict[str, Any]
    value: bytes


def read_published(settings: Settings, *, at_least: int = 0, timeout: float = 20.0) -> list[Published]:
    """Everything on the world's three event topics, up to their current ends.

    With `at_least`, read again until that many messages are there (or fail after `timeout`).
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    deadline = time.monotonic() + timeout
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "log_level": 3})
    try:
        while True:
            ends: dict[tuple[str, int], int] = {}
            try:
                for topic in settings.topics.events:
                    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
                    for partition in metadata.partitions:
                        ends[(topic, partition)] = consumer.get_watermark_offsets(
                            TopicPartition(topic, partition), timeout=10)[1]
            except KafkaException:  # a topic created a moment ago may have no leader yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            if sum(ends.values()) >= at_least or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        wanted = {tp: end for tp, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(t, p, 0) for (t, p) in wanted])
        messages: list[Published] = []
        positions = {tp: 0 for tp in wanted}
        while any(positions[tp] < end for tp, end in wanted.items()):
            if time.monotonic() > deadline + 10:
                raise AssertionError(f"could not read to the end of {wanted}; at {positions}")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise AssertionError(f"consumer error: {message.error()}")
            event_type, record = decode(message.value())
            positions[(message.topic(), message.partition())] = message.offset() + 1
            messages.append(Published(message.topic(), message.partition(), message.offset(),
                                      message.key().decode(), event_type, record, message.value()))
    finally:
        consumer.close()
    if len(messages) < at_least:
        raise AssertionError(f"expected at least {at_least} events, found {len(messages)}")
    return sorted(messages, key=lambda m: (m.topic, m.partition, m.offset))


@dataclass
class Outcome:
    """What a run returned or raised, and every event it published."""

    result: Any = None
    error: BaseException | None = None
    events: list[Published] = field(default_factory=list)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e.record for e in self.events if e.event_type == event_type]

    @property
    def materializations(self) -> list[dict[str, Any]]:
        return self.of("materialization")

    @property
    def dependencies(self) -> list[dict[str, Any]]:
        return self.of("dependency")

    @property
    def metadata(self) -> list[dict[str, Any]]:
        return self.of("metadata")

    def materialization(self, key: str) -> dict[str, Any]:
        found = [m for m in self.materializations if m["asset_key"] == key]
        assert len(found) == 1, f"expected one materialization of {key}, got {len(found)}: {found}"
        return found[0]

    def edges(self) -> set[tuple[str, str, str]]:
        """(upstream, downstream, INFERRED|EXPLICIT) of every dependency event."""
        return {(d["upstream_key"], d["downstream_key"], d["declared"]) for d in self.dependencies}

    def upstream_of(self, key: str) -> list[str]:
        return self.materialization(key)["upstream_keys"]


def run_and_read(settings: Settings, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    """Call `fn` with a publisher on `settings`, close it (all events acknowledged), read back."""
    outcome = Outcome()
    with Publisher(settings) as publisher, publishing(publisher):
        try:
            result = fn(*args, **kwargs)
            outcome.result = asyncio.run(result) if inspect.iscoroutine(result) else result
        except Exception as exc:
            outcome.error = exc
        flushed = publisher.flush()
        assert flushed.complete, f"events not acknowledged: {flushed}"
    outcome.events = read_published(settings)
    return outcome
