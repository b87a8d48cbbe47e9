"""Drill: live consumers keep projecting across repeated broker restarts.

Around a broker restart librdkafka may end up knowing no broker and never reconnect (see
`assetlog/broker_watch.py`; the broker-outage drill saw both consumers stay silent once).
The runners here refresh metadata every 10 ms, the setting under which a plain consumer was
left so by 1 restart in 31, and the broker is restarted ROUNDS times; after each restart the
events published must be projected within a minute, and at the end exactly once. The window
is narrow: in 21 rounds so far (6 with the watch, 15 with it switched off) neither runner was
caught in it, so this drill guards availability across restarts in general; the replacement
itself is proven by `test_consumer_broker_watch.py`.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import fault_support
import pytest
from events_factory import TaskRun, events_of, publish, published_ends
from fault_support import assert_exact, stored_offsets, wait_for

from assetlog.consumers import ProjectionRunner

pytestmark = [pytest.mark.faults, pytest.mark.slow]
private, world = fault_support.private, fault_support.world

ROUNDS = 15
METADATA_REFRESH_MS = "10"  # a pass-through librdkafka setting: refresh often, so the window is hit


def _wait_projected(world, runners: dict[str, ProjectionRunner], ends, what: str) -> None:
    wait_for(lambda: all(stored_offsets(world.dsn, name) == ends for name in runners),
             f"{what} (clients replaced so far: { {n: getattr(r.stats, 'reconnects', None) for n, r in runners.items()} })",
             timeout=60)


def _runs(round_: int) -> list:
    return events_of([TaskRun([f"s3://wedge/r{round_}/out{i}.csv"], [f"s3://wedge/r{round_}/in{i}.csv"])
                      for i in range(5)])


def test_consumers_keep_projecting_across_repeated_broker_restarts(private, world):
    settings = replace(world.settings, kafka_settings={**world.settings.kafka_settings,
                                                       "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS})
    published = publish(world.settings, _runs(0))
    runners = {name: ProjectionRunner(name, settings, batch_size=50) for name in fault_support.PROJECTIONS}
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners.values()]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(1, ROUNDS + 1):
            _wait_projected(world, runners, published_ends(published), f"round {round_}: projected before the restart")
            assert private.kafka.stop()
            private.kafka.start()
            published += publish(world.settings, _runs(round_))
            _wait_projected(world, runners, published_ends(published), f"round {round_}: projected after the restart")
    finally:
        for runner in runners.values():
            runner.stop()
        for thread in threads:
            thread.join(60)
    print({name: runner.stats.reconnects for name, runner in runners.items()})  # how often the window was hit
    assert_exact(world, private.endpoints, published)
