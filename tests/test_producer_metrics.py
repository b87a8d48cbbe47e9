"""The producer's metrics, scraped over HTTP from a worker's own registry, on the real broker.

While Kafka cannot be reached the outbox depth rises (and the failed deliveries
are counted); once a publisher reaches the broker the events are delivered, the
depth falls to 0 and the delivered events and publish latencies are counted.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from conftest import Isolated
from metrics_support import scrape, total
from prometheus_client import CollectorRegistry

from assetlog import metrics
from assetlog.compose.processes import free_port
from assetlog.producer import Publisher, add_asset_metadata, flow, materialize, publishing, register_metrics

pytestmark = pytest.mark.timeout(120)

KEY = "s3://metrics/out.parquet"


@materialize(KEY, asset_deps=["s3://metrics/in.csv"])
def build(i: int) -> int:
    add_asset_metadata(KEY, {"i": i})  # 3 events per run: materialization, dependency, metadata
    return i


@flow
def runs(n: int) -> None:
    for i in range(n):
        build(i)


def test_outbox_depth_rises_while_kafka_is_unreachable_and_falls_to_zero_after_delivery(isolated: Isolated) -> None:
    registry = CollectorRegistry()  # the worker's own
    register_metrics(registry)
    server = metrics.serve(free_port(), registry=registry)
    topic = isolated.settings.topics.materializations
    try:
        before = scrape(server.port)
        assert total(before, "assetlog_outbox_events") == 0
        assert "assetlog_outbox_oldest_event_timestamp_seconds" not in before  # no oldest event: no sample
        delivered_before = total(before, "assetlog_producer_events_delivered_total", topic=topic)
        failed_before = total(before, "assetlog_producer_delivery_failures_total", topic=topic, kind="retried")

        # Nothing listens on this port: the events wait in the outbox, their deliveries time out.
        unreachable = replace(isolated.settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
        written = time.time()
        with Publisher(unreachable, flush_timeout=1, producer_config={"message.timeout.ms": 1000}) as down, \
                publishing(down):
            runs(10)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                held = scrape(server.port)
                if total(held, "assetlog_producer_delivery_failures_total", topic=topic, kind="retried") > failed_before:
                    break
                time.sleep(0.2)
        assert total(held, "assetlog_outbox_events") == 30
        oldest = total(held, "assetlog_outbox_oldest_event_timestamp_seconds")
        assert written - 1 <= oldest <= time.time()
        assert total(held, "assetlog_producer_delivery_failures_total", topic=topic, kind="retried") >= \
            failed_before + 10

        # The next publisher on the same outbox reaches Kafka and delivers what waited.
        with Publisher(isolated.settings, flush_timeout=30) as up:
            assert up.flush().complete
            after = scrape(server.port)
        assert total(after, "assetlog_outbox_events") == 0
        assert "assetlog_outbox_oldest_event_timestamp_seconds" not in after
        assert total(after, "assetlog_producer_events_delivered_total", topic=topic) >= delivered_before + 10
    finally:
        server.close()


def test_publish_latency_is_observed_for_each_delivered_row(isolated: Isolated) -> None:
    registry = CollectorRegistry()
    register_metrics(registry, outbox_dir=isolated.settings.outbox_dir)
    server = metrics.serve(free_port(), registry=registry)
    topic = isolated.settings.topics.metadata
    try:
        count = total(scrape(server.port), "assetlog_producer_publish_duration_seconds_count", topic=topic)
        with Publisher(isolated.settings, flush_timeout=30) as publisher, publishing(publisher):
            runs(5)
        scraped = scrape(server.port)
        assert total(scraped, "assetlog_producer_publish_duration_seconds_count", topic=topic) > count
        assert total(scraped, "assetlog_outbox_events") == 0
    finally:
        server.close()
