"""The producer's Prometheus metrics, for a workflow worker to scrape with its own.

`register_metrics(registry)` adds them to the worker's registry (once per registry):
- `assetlog_outbox_events`, `assetlog_outbox_undeliverable_events` and
  `assetlog_outbox_oldest_event_timestamp_seconds` (absent while the outbox is
  empty), read from the outbox file at each scrape, so they count the events of
  every publisher on it, those of a worker that died included;
- `assetlog_producer_publish_duration_seconds{topic}` (histogram),
  `assetlog_producer_events_delivered_total{topic}` and
  `assetlog_producer_delivery_failures_total{topic,kind}`, kept by the
  publishers' writer threads (names in `assetlog.metrics`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from assetlog import metrics
from assetlog.config import Settings
from assetlog.producer.outbox import Outbox, outbox_path
from assetlog.producer.publisher import open_publishers

__all__ = ["OutboxCollector", "register_metrics"]


class OutboxCollector(Collector):
    """The outbox's depth at scrape time: the outbox of `directory`, else those of this process's
    open publishers, else the one ASSETLOG_OUTBOX_DIR names."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory

    def _directories(self) -> set[Path]:
        if self.directory is not None:
            return {Path(self.directory)}
        found = {Path(p.settings.outbox_dir) for p in open_publishers()}
        return found or {Path(Settings.from_env().outbox_dir)}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily(metrics.OUTBOX_EVENTS, "Events waiting in the outbox for Kafka's acknowledgement."),
                GaugeMetricFamily(metrics.OUTBOX_UNDELIVERABLE,
                                  "Events set aside in the outbox: Kafka refuses them for good."),
                GaugeMetricFamily(metrics.OUTBOX_OLDEST_EVENT,
                                  "Unix time the oldest waiting event was written to the outbox (absent if none)."))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = undeliverable = 0
        oldest: float | None = None
        for directory in self._directories():
            counts = _read(directory)
            waiting += counts[0]
            undeliverable += counts[1]
            if counts[2] is not None:
                oldest = counts[2] if oldest is None else min(oldest, counts[2])
        events, set_aside, oldest_family = self._families()
        events.add_metric([], waiting)
        set_aside.add_metric([], undeliverable)
        if oldest is not None:
            oldest_family.add_metric([], oldest)
        return iter((events, set_aside, oldest_family))


def _read(directory: Path) -> tuple[int, int, float | None]:
    """(waiting events, undeliverable events, oldest waiting row's time) of one outbox; read only."""
    if not outbox_path(directory).exists():
        return 0, 0, None
    try:
        outbox = Outbox(directory, read_only=True)
    except Exception:  # unreadable now (being created, damaged): `assetlog outbox status` says why
        return 0, 0, None
    try:
        return outbox.depth()
    except sqlite3.Error:
        return 0, 0, None
    finally:
        outbox.close()


def register_metrics(registry: CollectorRegistry | None = None, *, outbox_dir: Path | None = None) -> None:
    """Add the producer's metrics to `registry` (default: Assetlog's own, `assetlog.metrics.REGISTRY`),
    e.g. a worker's `prometheus_client.REGISTRY`; call it once per registry. `outbox_dir` pins the
    outbox whose depth is reported (default: those of the process's publishers, else the environment's)."""
    target = metrics.REGISTRY if registry is None else registry
    if target is not metrics.REGISTRY:
        metrics.register_on(target, metrics.PRODUCER)
    target.register(OutboxCollector(outbox_dir))
