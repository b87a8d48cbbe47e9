"""Disk-full drill: flows run with the outbox on a small tmpfs and the broker down; every flow
either fails loudly or has all its events delivered once room is made and the broker is back.

Worker processes run flows with the SDK, configured only by the environment; the broker is
a closed port while they run (the shared broker is never stopped) and "returns" as the real
one for `assetlog outbox flush`. Phase 1 runs in ASSETLOG_OUTBOX_FULL=fail mode until the disk
is full; phase 2 in block mode, while the test makes room once a worker is held up. Each
worker logs, per flow, its task runs, those that raised and whether the flow raised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from outbox_support import closed_port, small_disk
from producer_support import read_published

pytestmark = pytest.mark.faults

WORKER = textwrap.dedent("""
    import json, sys
    from assetlog.producer import add_asset_metadata, current_task_run, flow, materialize
    from assetlog.producer.recording_errors import LineageNotRecorded

    log = open(sys.argv[1], "a", buffering=1)
    flows, tasks, tag = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    KEY = "s3://drill/full/" + tag

    @materialize(KEY)
    def build(n, seen):
        add_asset_metadata(KEY, {"n": n, "pad": "x" * 2000})
        seen.append(current_task_run().id)

    for i in range(flows):
        record = {"flow": f"{tag}-{i}", "runs": [], "raised_runs": [], "flow_raised": False}

        @flow
        def batch():
            for n in range(tasks):
                try:
                    build(n, record["runs"])
                except LineageNotRecorded:
                    record["raised_runs"].append(record["runs"][-1])

        try:
            batch()
        except LineageNotRecorded as exc:
            record["flow_raised"] = True
            record["error"] = str(exc)
        log.write(json.dumps(record) + "\\n")
""")


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def run_worker(script: Path, log: Path, env: dict[str, str], flows: int, tasks: int, tag: str) -> int:
    proc = subprocess.run([sys.executable, str(script), str(log), str(flows), str(tasks), tag], env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode


def drill(isolated, tmp_path: Path, *, size: str, filler_bytes: int, flows: int, tasks: int) -> dict[str, int]:
    script, log = tmp_path / "worker.py", tmp_path / "flows.jsonl"
    script.write_text(WORKER)
    with small_disk(tmp_path / "disk", size=size) as disk:
        outbox_dir = disk.mount / "outbox"
        with open(disk.filler, "wb") as handle:  # most of the disk is taken by something else
            handle.write(b"\0" * filler_bytes)
        down = isolated.env(ASSETLOG_OUTBOX_DIR=str(outbox_dir), ASSETLOG_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed_port()}",
                            ASSETLOG_FLUSH_TIMEOUT_SECONDS="1")
        started = time.monotonic()
        # Phase 1: fail mode, until the disk is full.
        exits = [run_worker(script, log, {**down, "ASSETLOG_OUTBOX_FULL": "fail"}, flows, tasks, "fail")]
        # Full: at most 1 MiB left (a write that failed can leave exactly that much, in whole extents).
        assert free_bytes(disk.mount) <= 1 << 20, "phase 1 did not fill the disk: make the drill's disk smaller"
        # Phase 2: block mode; room is made once the worker has been held up a moment.
        def make_room() -> None:
            time.sleep(3.0)
            disk.make_room()

        helper = threading.Thread(target=make_room)
        helper.start()
        exits.append(run_worker(script, log, {**down, "ASSETLOG_OUTBOX_FULL": "block",
                                              "ASSETLOG_OUTBOX_FULL_WAIT_SECONDS": "60"}, flows, tasks, "block"))
        helper.join()
        outage_seconds = time.monotonic() - started
        # The broker returns: the next producer on the outbox delivers what waits.
        flushed = subprocess.run([sys.executable, "-m", "assetlog", "outbox", "flush", "--json"],
                                 env=isolated.env(ASSETLOG_OUTBOX_DIR=str(outbox_dir)), capture_output=True,
                                 text=True, timeout=300)
        assert flushed.returncode == 0, flushed.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 2 * flows, f"worker exits {exits}"
    expected = sum(2 * (len(r["runs"]) - len(r["raised_runs"])) for r in records if not r["flow_raised"])
    report = json.loads(flushed.stdout)
    assert report["delivered"] >= expected - 2 * flows * tasks, (report, expected, exits)
    delivered: dict[str, int] = {}
    for message in read_published(isolated.settings, at_least=expected, timeout=60):
        run_id = message.record["run"]["task_run_id"]
        delivered[run_id] = delivered.get(run_id, 0) + 1
    counts = {"flows": len(records), "delivered": 0, "failed_loudly": 0, "lost_silently": 0,
              "runs_raised": 0, "events_delivered": sum(delivered.values()), "outage_seconds": round(outage_seconds, 1)}
    for record in records:
        counts["runs_raised"] += len(record["raised_runs"])
        returned = [r for r in record["runs"] if r not in record["raised_runs"]]
        all_there = all(delivered.get(r) == 2 for r in returned)
        if record["flow_raised"] or record["raised_runs"]:
            counts["failed_loudly"] += 1
        elif all_there:
            counts["delivered"] += 1
        else:
            counts["lost_silently"] += 1
        # A run that returned normally is delivered in full even inside a flow that failed loudly,
        # unless the flow's own error said its events were not made durable.
        if not record["flow_raised"]:
            assert all_there, f"flow {record['flow']}: a run returned normally but its events are missing"
    assert all(count == 2 for count in delivered.values()), "an event was delivered twice"
    assert counts["lost_silently"] == 0, counts
    assert counts["failed_loudly"] >= 1 and counts["delivered"] >= flows, counts
    print(f"disk-full drill: {counts}; worker exits {exits}")
    return counts


def test_disk_full_drill_every_flow_fails_loudly_or_is_delivered(isolated, tmp_path):
    drill(isolated, tmp_path, size="24m", filler_bytes=23 << 20, flows=8, tasks=10)


@pytest.mark.slow
def test_disk_full_drill_long(isolated, tmp_path):
    drill(isolated, tmp_path, size="48m", filler_bytes=47 << 20, flows=40, tasks=20)
