"""`assetlog export openlineage`: an independent consumer group that sends RunEvents to a target.

The three topics are read together; a materialization's RunEvent is sent once its
dependencies (one per upstream key) are in, and its metadata, or `grace` seconds
passed without it (metadata is optional), or the topics are caught up. Offsets are
committed only below the oldest message of an event not yet acknowledged by the
target, so a crash or a rebalance re-sends, never skips (Assetlog's receiver gives a
re-sent event the same ids). A target that fails is retried with backoff, reported
through `progress`, and nothing is read meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from confluent_kafka import KafkaError, Producer, TopicPartition

from assetlog.config import Settings
from assetlog.consumers.kafka_consumer import GROUP_DEFAULTS, event_consumer
from assetlog.consumers.retry import Backoff
from assetlog.integrations.openlineage.export import Materialization, run_event
from assetlog.projections.events import Position
from assetlog.schemas import MATERIALIZATION, DecodeError, decode

log = logging.getLogger("assetlog.integrations.openlineage")
ORPHAN_GRACE_SECONDS = 30.0  # dependencies still without their materialization after this are sent as RUNNING


class TargetError(Exception):
    """The target did not acknowledge; the events are sent again after a backoff."""


class Target(Protocol):
    def send(self, events: list[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...


class HttpTarget:
    """The official client's HTTP transport (Marquez's `POST /api/v1/lineage`, DataHub, OpenMetadata...)."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        # deferred: openlineage-python, the optional `openlineage` extra (HTTP target only)
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        base, endpoint = (url, "") if url.rstrip("/").endswith("/lineage") else (url, "api/v1/lineage")
        config: dict[str, Any] = {"url": base, "endpoint": endpoint, "timeout": 10.0, "retry": {"total": 0}}
        if api_key:
            config["auth"] = {"type": "api_key", "apiKey": api_key}
        self.transport = HttpTransport(HttpConfig.from_dict(config))
        self.url = url

    def send(self, events: list[Mapping[str, Any]]) -> None:
        for event in events:
            try:
                self.transport.emit(event)  # raises for anything but 2xx
            except Exception as exc:
                raise TargetError(f"{self.url}: {' '.join(str(exc).split())[:300]}") from exc

    def close(self) -> None:
        self.transport.close()


class KafkaTarget:
    """JSON values on a topic (what the client's Kafka transport writes), keyed by run id, acks=all."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(settings.kafka_client_config(
            defaults={"linger.ms": 5, "log_level": 3, "message.timeout.ms": 30000},
            required={"enable.idempotence": True, "acks": "all"}))

    def send(self, events: list[Mapping[str, Any]]) -> None:
        errors: list[str] = []

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(str(error))

        for event in events:
            self.producer.produce(self.topic, key=str(event["run"]["runId"]).encode(), value=orjson.dumps(event),
                                  on_delivery=on_delivery)
        remaining = self.producer.flush(60)
        if remaining or errors:
            raise TargetError(f"Kafka topic {self.topic}: {remaining} unacknowledged; {errors[:3]}")

    def close(self) -> None:
        self.producer.flush(10)


class FileTarget:
    """One JSON event per line, appended and fsynced before the offsets move."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file = open(path, "ab")
        except OSError as exc:
            raise TargetError(f"cannot open {path}: {exc.strerror}") from None

    def send(self, events: list[Mapping[str, Any]]) -> None:
        try:
            self.file.write(b"".join(orjson.dumps(event) + b"\n" for event in events))
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as exc:
            raise TargetError(f"cannot write {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        self.file.close()


@dataclass
class ExportStats:
    messages: int = 0
    exported: int = 0
    undecodable: int = 0
    retries: int = 0


class Exporter:
    def __init__(self, settings: Settings, target: Target, group: str | None = None, grace: float = 2.0) -> None:
        self.settings = settings
        self.target = target
        self.group = group or f"{settings.topic_prefix}.openlineage-export"
        self.grace = grace
        self.stats = ExportStats()
        self._pending: dict[str, Materialization] = {}
        self._touched: dict[str, float] = {}
        self._consumed: dict[tuple[str, int], int] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._at_end: set[tuple[str, int]] = set()

    def _consumer(self) -> Any:
        consumer = event_consumer(self.settings, self.group, defaults=GROUP_DEFAULTS)

        def on_assign(_consumer: Any, partitions: list[Any]) -> None:
            self._assigned.update((p.topic, p.partition) for p in partitions)

        def on_revoke(_consumer: Any, partitions: list[Any]) -> None:
            # What was read but not sent is read again by whoever gets the partition.
            self._assigned.difference_update((p.topic, p.partition) for p in partitions)
            self._pending.clear()
            self._touched.clear()
            self._consumed.clear()
            self._at_end.clear()

        consumer.subscribe(list(self.settings.topics.events), on_assign=on_assign, on_revoke=on_revoke,
                           on_lost=on_revoke)
        return consumer

    def run(self, stop: threading.Event, until_caught_up: bool = False,
            progress: Callable[[str], None] = log.info) -> ExportStats:
        consumer = self._consumer()
        try:
            while not stop.is_set():
                self._read(consumer.consume(500, 0.5))
                caught_up = bool(self._assigned) and self._assigned <= self._at_end
                ready = self._ready(caught_up)
                if ready and not self._send(ready, stop, progress):
                    break  # stopped while the target was down: nothing committed for these
                if ready or caught_up:
                    self._commit(consumer)
                if until_caught_up and caught_up and not self._pending:
                    break
        finally:
            consumer.close()
            self.target.close()
        return self.stats

    def _read(self, messages: list[Any]) -> None:
        now = time.monotonic()
        for message in messages:
            where = (message.topic(), message.partition())
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(where)
                continue
            self._at_end.discard(where)
            self._consumed[where] = message.offset() + 1
            self.stats.messages += 1
            try:
                event_type, record = decode(message.value())
            except DecodeError:
                self.stats.undecodable += 1  # the projections dead-letter it; nothing to export
                continue
            group_id = record["event_id"] if event_type == MATERIALIZATION else record["materialization_event_id"]
            group = self._pending.get(group_id)
            if group is None:
                group = self._pending[group_id] = Materialization(group_id)
            group.add(event_type, record, Position(*where, message.offset()))
            self._touched[group_id] = now

    def _ready(self, caught_up: bool) -> list[Materialization]:
        now = time.monotonic()
        ready = []
        for group_id, group in self._pending.items():
            idle = now - self._touched[group_id]
            if caught_up or idle > ORPHAN_GRACE_SECONDS or (group.complete and (group.metadata or idle > self.grace)):
                ready.append(group)
        return sorted(ready, key=lambda g: min(g.positions))

    def _send(self, ready: list[Materialization], stop: threading.Event, progress: Callable[[str], None]) -> bool:
        events = [run_event(group) for group in ready]
        backoff = Backoff(initial=1.0, maximum=60.0)
        while True:
            try:
                self.target.send(events)
                break
            except TargetError as exc:
                self.stats.retries += 1
                delay = backoff.next_delay()
                progress(f"the target did not acknowledge {len(events)} events ({exc}); retrying in {delay:.0f}s")
                if stop.wait(delay):
                    return False
        if backoff.attempts:
            progress("the target acknowledged again")
        for group in ready:
            self._pending.pop(group.materialization_id, None)
            self._touched.pop(group.materialization_id, None)
        self.stats.exported += len(events)
        return True

    def _commit(self, consumer: Any) -> None:
        oldest: dict[tuple[str, int], int] = {}
        for group in self._pending.values():
            for position in group.positions:
                where = (position.topic, position.partition)
                oldest[where] = min(oldest.get(where, position.offset), position.offset)
        offsets = [TopicPartition(topic, partition, oldest.get((topic, partition), offset))
                   for (topic, partition), offset in self._consumed.items()]
        if offsets:
            consumer.commit(offsets=offsets, asynchronous=False)
