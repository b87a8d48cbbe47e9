"""More partitions while events flow: the projections stay identical to a rebuild.

Adding partitions to a keyed topic moves keys: an asset's later events land
on another partition than its earlier ones, so per-asset order across the
change is gone. Assetlog's merge rules do not depend on order (last write
wins by event time and id, edges accumulate), so the tables must still equal
a single uninterrupted projection of exactly the published events. The
producer and both consumers run for real and find the new partitions through
their metadata refresh (lowered here, as an operator would while resizing).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from confluent_kafka.admin import NewPartitions
from conftest import Isolated, StackEndpoints
from fault_support import (
    PROJECTIONS,
    Stream,
    assert_exact,
    consume_process,
    events_of_runs,
    realistic_runs,
    stop_processes,
    wait_for,
    wait_until_projected,
)

from assetlog.projections import migrate
from assetlog.topics import admin_client

pytestmark = pytest.mark.timeout(600)
REFRESH = {"ASSETLOG_KAFKA_TOPIC_METADATA_REFRESH_INTERVAL_MS": "500"}
GROWN_TO = 12


def test_adding_partitions_mid_stream_leaves_projections_identical_to_a_rebuild(
        stack: StackEndpoints, isolated: Isolated) -> None:
    settings = replace(isolated.settings,
                       kafka_settings={**isolated.settings.kafka_settings, "topic.metadata.refresh.interval.ms": "500"})
    migrate(isolated.dsn)
    consumers = [consume_process(isolated, projection, **REFRESH) for projection in PROJECTIONS]
    try:
        events = events_of_runs(realistic_runs(2500, seed=23))
        stream = Stream(settings, events, rate=1500).start()
        wait_for(lambda: len(stream.published) > len(events) // 3, "a third of the stream published", 120)
        admin = admin_client(settings)  # kept: its futures die with it
        futures = admin.create_partitions(
            [NewPartitions(topic, GROWN_TO) for topic in settings.topics.events], operation_timeout=30)
        for future in futures.values():
            future.result()
        published = stream.join()
        moved = {position.partition for _, _, position in published if position.partition >= 3}
        assert moved, "no event reached a new partition: the producer never saw them"
        wait_until_projected(isolated, processes=consumers)
    finally:
        stop_processes(consumers)
    assert_exact(isolated, stack, published)
