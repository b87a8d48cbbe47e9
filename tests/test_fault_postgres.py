"""Drill: PostgreSQL restarted mid-stream (a real `pg_ctl` stop and start) under running consumers.

The module runs its own broker and PostgreSQL (the shared ones stay up for the
tests running beside it). While events stream in at a steady rate and both
`assetlog consume` processes project them, the server is restarted twice: a
fast shutdown (connections terminated, checkpoint) and an immediate one (no
checkpoint: crash recovery on start, as after a power cut of the server
process). The consumers must ride both out and end with 0 events lost and 0
duplicated.
"""

from __future__ import annotations

import json
import signal
import time

import fault_support
import pytest
from fault_support import (
    PROJECTIONS,
    Stream,
    assert_exact,
    committed,
    consume_process,
    events_of_runs,
    process_log,
    realistic_runs,
    stop_processes,
    wait_for,
    wait_until_projected,
)

pytestmark = pytest.mark.faults
private, world = fault_support.private, fault_support.world  # the drill fixtures, shared


def test_postgres_restarted_twice_mid_stream_loses_and_duplicates_nothing(private, world):
    events = events_of_runs(realistic_runs(5000, seed=5))
    # 1,000 events/s: the stream lasts ~15 s, so both restarts land mid-stream even on a loaded machine.
    stream = Stream(world.settings, events, rate=1000).start()
    processes = [consume_process(world, name, "--batch-size", "500") for name in PROJECTIONS]
    downtimes = []
    try:
        for mode in ("fast", "immediate"):
            wait_for(lambda: all(committed(world.dsn, name) > 0 for name in PROJECTIONS), "consumers under way")
            time.sleep(1.5)
            before = [committed(world.dsn, name) for name in PROJECTIONS]
            started = time.monotonic()
            assert private.postgres.stop(mode), "the private PostgreSQL was not running"
            private.postgres.start()
            downtimes.append(time.monotonic() - started)
            assert all(0 < done < len(events) for done in before), f"not mid-stream: {before}"
        published = stream.join()
        wait_until_projected(world, timeout=120, processes=processes)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        reports = []
        for process in processes:
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0, process_log(process)[-3000:]
            reports.append(json.loads(out))
    finally:
        stop_processes(processes)
    assert all(report["retries"] >= 2 for report in reports), [r["retries"] for r in reports]  # both outages hit
    assert [report["messages"] for report in reports] == [len(published)] * 2  # each batch committed once
    counts = assert_exact(world, private.endpoints, published)
    assert counts["lineage_history"] == len(published)
    assert max(downtimes) < 30, downtimes
