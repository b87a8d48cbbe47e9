"""Drills: the broker stopped while flows keep materializing, and a worker exiting while it is down.

The module runs its own broker and PostgreSQL (the shared ones stay up for the
tests running beside it). Workers are real processes running flows with the
producer SDK, configured only by the environment, with a flush timeout of
FLUSH_TIMEOUT seconds. Each task call's wall time is measured in the worker:
no task body may be held up by the broker being away (a task never waits on
the network), and no flow longer than its flush timeout.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fault_support
import pytest
from fault_support import (
    PROJECTIONS,
    assert_exact,
    catch_up,
    consume_process,
    process_log,
    stop_processes,
    wait_for,
    wait_until_projected,
)
from producer_support import read_published

from assetlog.producer.outbox import Outbox

pytestmark = pytest.mark.faults
private, world = fault_support.private, fault_support.world  # the drill fixtures, shared

FLUSH_TIMEOUT = 2.0
# Events per flow run: extract (materialization + metadata), transform (+ its dependency), load
# (materialization + dependency).
EVENTS_PER_FLOW = 7

WORKER = textwrap.dedent("""
    import json, os, sys, time
    from assetlog.producer import add_asset_metadata, current_task_run, flow, materialize

    log = open(sys.argv[1], "a", buffering=1)
    flows, stop_file = int(sys.argv[2]), sys.argv[3]
    RAW, CLEAN, REPORT = "s3://drill/raw/orders.csv", "s3://drill/clean/orders.parquet", "pg://drill/report"

    def timed(task, *args):
        started = time.perf_counter()
        result = task(*args)
        log.write(json.dumps({"task": task.name, "seconds": time.perf_counter() - started}) + "\\n")
        return result

    @materialize(RAW)
    def extract(n):
        add_asset_metadata(RAW, {"n": n})
        log.write(json.dumps({"run": current_task_run().id}) + "\\n")
        return {"n": n}  # an object: lineage is traced by identity (small ints are not)

    @materialize(CLEAN)
    def transform(raw):
        add_asset_metadata(CLEAN, {"rows": raw["n"] * 10})
        log.write(json.dumps({"run": current_task_run().id}) + "\\n")
        return {"rows": raw["n"] * 10}

    @materialize(REPORT)
    def load(clean):
        log.write(json.dumps({"run": current_task_run().id}) + "\\n")

    @flow
    def pipeline(n):
        load(timed(transform, timed(extract, n)))

    n = 0
    while (flows and n < flows) or (not flows and not os.path.exists(stop_file)):
        started = time.perf_counter()
        pipeline(n)
        log.write(json.dumps({"flow": n, "seconds": time.perf_counter() - started}) + "\\n")
        n += 1
        time.sleep(0.02)
    log.write(json.dumps({"done": n, "pid": os.getpid()}) + "\\n")
""")


class Worker:
    """A worker process running `flows` flow runs (0: until stopped); its log is JSON lines."""

    def __init__(self, world, tmp_path: Path, name: str, flows: int = 0, **env: str) -> None:
        self.log = tmp_path / f"{name}.jsonl"
        self.stop_file = tmp_path / f"{name}.stop"
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(self.log), str(flows), str(self.stop_file)],
            env=world.env(ASSETLOG_FLUSH_TIMEOUT_SECONDS=str(FLUSH_TIMEOUT), **env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.endswith("}")]

    def flows(self) -> int:
        return sum(1 for e in self.entries() if "flow" in e)

    def finish(self, timeout: float = 120) -> str:
        self.stop_file.touch()
        _, stderr = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, stderr[-3000:]
        return stderr


def task_runs(worker: Worker) -> list[str]:
    return [e["run"] for e in worker.entries() if "run" in e]


def outbox_events(world) -> int:
    outbox = Outbox(world.settings.outbox_dir)
    try:
        return outbox.pending_events()
    finally:
        outbox.close()


def assert_every_event_arrived(world, workers: list[Worker]) -> list:
    """Kafka holds every task run's events (a resend may duplicate a message, never lose one)."""
    runs = [run for worker in workers for run in task_runs(worker)]
    flows = sum(worker.flows() for worker in workers)
    assert len(runs) == 3 * flows
    waiting = outbox_events(world)
    assert waiting == 0, f"{waiting} events still wait in the outbox after the producers exited"
    arrived = read_published(world.settings, at_least=flows * EVENTS_PER_FLOW, timeout=60)
    distinct = {m.record["event_id"]: m for m in arrived}
    assert len(distinct) == flows * EVENTS_PER_FLOW
    materialized = sorted(m.record["run"]["task_run_id"] for m in distinct.values()
                          if m.event_type == "materialization")
    assert materialized == sorted(runs)
    return [(m.event_type, m.record, _position(m)) for m in arrived]


def _position(message):
    from assetlog.projections import Position

    return Position(message.topic, message.partition, message.offset)


def broker_outage_drill(private, world, tmp_path, outage: float, **worker_env: str) -> None:
    consumers = [consume_process(world, name) for name in PROJECTIONS]
    worker = Worker(world, tmp_path, "steady", **worker_env)
    try:
        wait_for(lambda: worker.flows() >= 20, "flows under way", timeout=60)
        assert private.kafka.stop(), "the private broker was not running"
        stopped_at, flows_before = time.monotonic(), worker.flows()
        time.sleep(outage)
        during = worker.flows() - flows_before
        private.kafka.start()
        outage_seconds = time.monotonic() - stopped_at
        flows_after = worker.flows()
        wait_for(lambda: worker.flows() >= flows_after + 20, "flows after the restart", timeout=60)
        worker.finish()
        published = assert_every_event_arrived(world, [worker])
        wait_until_projected(world, timeout=120, processes=consumers)
        for process in consumers:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
            assert process.returncode == 0, process_log(process)[-3000:]
    finally:
        stop_processes(consumers)
        if worker.process.poll() is None:
            worker.process.kill()
    assert during >= outage / 2, f"flows stalled while the broker was away: {during} in {outage}s"
    tasks = [e["seconds"] for e in worker.entries() if "task" in e]
    flows = [e["seconds"] for e in worker.entries() if "flow" in e]
    assert max(tasks) < FLUSH_TIMEOUT, f"a task body was held up {max(tasks):.2f}s"
    assert max(flows) < FLUSH_TIMEOUT + 1.0, f"a flow waited {max(flows):.2f}s (flush timeout {FLUSH_TIMEOUT}s)"
    assert outage_seconds >= outage
    assert_exact(world, private.endpoints, published)


def test_broker_stopped_for_a_while_under_steady_flows_every_event_arrives(private, world, tmp_path):
    # Messages time out in librdkafka well within the outage (30 s by default), several times: their
    # rows fail and back off, and must still go out as soon as the broker is back, before the worker
    # ends (as they do in the 30 s drill).
    broker_outage_drill(private, world, tmp_path, outage=5.0, ASSETLOG_KAFKA_MESSAGE_TIMEOUT_MS="1200")


@pytest.mark.slow
def test_broker_stopped_for_30_seconds_under_steady_flows_every_event_arrives(private, world, tmp_path):
    broker_outage_drill(private, world, tmp_path, outage=30.0)


def test_a_worker_that_exits_while_the_broker_is_down_is_delivered_by_the_next_producer(private, world, tmp_path):
    assert private.kafka.stop()
    try:
        gone = Worker(world, tmp_path, "gone", flows=10)
        _, stderr = gone.process.communicate(timeout=120)
        assert gone.process.returncode == 0, stderr[-3000:]
        assert "unreachable" in stderr
        assert outbox_events(world) == 10 * EVENTS_PER_FLOW  # all of them wait in the outbox
    finally:
        private.kafka.start()
    assert read_published(world.settings) == []  # nothing reached Kafka before the broker came back
    successor = Worker(world, tmp_path, "successor", flows=3)
    _, stderr = successor.process.communicate(timeout=120)
    assert successor.process.returncode == 0, stderr[-3000:]
    published = assert_every_event_arrived(world, [gone, successor])
    producers = {record["producer"]["pid"] for _t, record, _p in published}
    assert producers == {gone.process.pid, successor.process.pid}
    for name in PROJECTIONS:
        assert catch_up(world, name)["stopped_by"] == "caught-up"
    assert_exact(world, private.endpoints, published)
