"""A full outbox never loses lineage silently: each task run either fails loudly or has its
events delivered once there is room and a broker; the publisher recovers by itself.

The file system is a real tmpfs of a few MiB, filled to the last byte (see outbox_support);
the broker is a closed port while the disk is full, then the real one.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
from outbox_support import closed_port, small_disk
from producer_support import read_published

from assetlog.config import Settings
from assetlog.producer import Publisher, add_asset_metadata, current_task_run, flow, materialize, publishing
from assetlog.producer.outbox import Outbox
from assetlog.producer.outbox_gate import OutboxGate
from assetlog.producer.recording_errors import FULL, UNWRITABLE, OutboxUnavailable, outbox_problem

KEY = "s3://full/out"


@materialize(KEY)
def build(n: int, ledger: dict) -> int:
    add_asset_metadata(KEY, {"n": n, "pad": "x" * 1500})
    ledger["started"].append(current_task_run().id)
    return n


def run_flows(flows: int, tasks: int, ledger: dict) -> None:
    """Flows of `tasks` runs; the ledger says which task runs and which flows raised."""

    @flow
    def batch(i: int) -> None:
        for n in range(tasks):
            try:
                build(i * 1000 + n, ledger)
            except OutboxUnavailable:  # raised at the task's end: its run id was noted by the body
                ledger["failed_runs"].add(ledger["started"][-1])

    for i in range(flows):
        try:
            batch(i)
            ledger["flows_ok"] += 1
        except OutboxUnavailable:
            ledger["flows_failed"] += 1


def new_ledger() -> dict:
    return {"started": [], "failed_runs": set(), "flows_ok": 0, "flows_failed": 0}


def delivered_runs(settings: Settings, at_least: int) -> dict[str, int]:
    runs: dict[str, int] = {}
    for message in read_published(settings, at_least=at_least, timeout=30):
        run_id = message.record["run"]["task_run_id"]
        runs[run_id] = runs.get(run_id, 0) + 1
    return runs


def assert_nothing_lost_silently(ledger: dict, delivered: dict[str, int]) -> tuple[int, int]:
    """Every task run that returned normally has both its events (materialization + metadata),
    exactly once; a run that raised may or may not. Returns (delivered runs, failed runs)."""
    returned = [r for r in ledger["started"] if r not in ledger["failed_runs"]]
    lost = [r for r in returned if delivered.get(r) != 2]
    assert not lost, f"{len(lost)} task runs returned normally but their events were not delivered: {lost[:5]}"
    assert all(count == 2 for count in delivered.values())
    return len(returned), len(ledger["failed_runs"])


@pytest.fixture
def disk(isolated, tmp_path):
    with small_disk(tmp_path / "disk") as mounted:
        Outbox(mounted.mount / "outbox").close()  # the outbox exists before the disk fills
        yield mounted


def on_disk(isolated, disk, **changes) -> Settings:
    return replace(isolated.settings, outbox_dir=disk.mount / "outbox", **changes)


def test_block_mode_waits_for_room_then_every_event_is_delivered(isolated, disk):
    settings = on_disk(isolated, disk, outbox_full="block", outbox_full_wait=60.0)
    ledger = new_ledger()
    disk.fill()
    publisher = Publisher(replace(settings, kafka_bootstrap=f"127.0.0.1:{closed_port()}"), flush_timeout=1)
    room_made_at: list[float] = []

    def make_room_later() -> None:
        time.sleep(2.0)
        room_made_at.append(time.monotonic())
        disk.make_room()

    helper = threading.Thread(target=make_room_later)
    started = time.monotonic()
    helper.start()
    try:
        with publishing(publisher):
            run_flows(3, 10, ledger)
    finally:
        helper.join()
        publisher.close()
    # Nothing failed: the runs waited for room (the first flow could not end before it came).
    assert ledger["flows_ok"] == 3 and not ledger["failed_runs"], ledger
    assert room_made_at and time.monotonic() - started >= 2.0
    with Publisher(settings) as successor:  # the broker is back: the next publisher delivers
        assert successor.flush().complete
    delivered = delivered_runs(isolated.settings, at_least=60)
    assert assert_nothing_lost_silently(ledger, delivered) == (30, 0)


def test_fail_mode_fails_the_runs_loudly_and_recovers_when_room_returns(isolated, disk):
    settings = on_disk(isolated, disk, outbox_full="fail")
    ledger = new_ledger()
    disk.fill()
    publisher = Publisher(replace(settings, kafka_bootstrap=f"127.0.0.1:{closed_port()}"), flush_timeout=1)
    try:
        with publishing(publisher):
            started = time.monotonic()
            run_flows(2, 10, ledger)
            assert time.monotonic() - started < 10, "fail mode must not wait for room"
            # Each task run raised (the flows catch it, so they end normally, with nothing left to flush).
            assert len(ledger["failed_runs"]) == 20 == len(ledger["started"])
            assert ledger["flows_failed"] == 0
            disk.make_room()
            time.sleep(1.5)  # the writer retries on its own
            run_flows(2, 10, ledger)  # the same publisher works again
            assert len(ledger["failed_runs"]) == 20 and ledger["flows_ok"] == 4
    finally:
        publisher.close()
    with Publisher(settings) as successor:
        assert successor.flush().complete
    returned = len(ledger["started"]) - len(ledger["failed_runs"])
    delivered = delivered_runs(isolated.settings, at_least=2 * returned)
    assert assert_nothing_lost_silently(ledger, delivered) == (20, 20)


WORKER = """
import sys
from assetlog.producer import add_asset_metadata, materialize

@materialize("s3://full/worker")
def build(n):
    add_asset_metadata("s3://full/worker", {"n": n, "pad": "x" * 1500})

for n in range(int(sys.argv[1])):
    build(n)  # no flow: only the exit can still say the events were not recorded
print("loop ended", flush=True)
"""


def test_a_process_whose_events_never_reached_the_outbox_exits_non_zero(isolated, disk, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    disk.fill()
    env = isolated.env(ASSETLOG_OUTBOX_DIR=str(disk.mount / "outbox"),
                       ASSETLOG_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed_port()}", ASSETLOG_OUTBOX_FULL="block",
                       ASSETLOG_OUTBOX_FULL_WAIT_SECONDS="1", ASSETLOG_FLUSH_TIMEOUT_SECONDS="1")
    proc = subprocess.run([sys.executable, str(script), "5"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr
    assert "is full" in proc.stderr and str(disk.mount / "outbox") in proc.stderr


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_outbox_status_works_on_a_full_disk_and_flush_once_room_is_made(isolated, disk):
    settings = on_disk(isolated, disk)
    with Publisher(replace(settings, kafka_bootstrap=None)) as offline, publishing(offline):
        run_flows(1, 5, new_ledger())
    disk.fill()
    env = isolated.env(ASSETLOG_OUTBOX_DIR=str(settings.outbox_dir))
    status = cli("outbox", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["events"] == 10
    flushed = cli("outbox", "flush", "--timeout", "5", env=env)
    assert flushed.returncode == 1
    lines = [line for line in flushed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is full" in lines[0] and str(settings.outbox_dir) in lines[0], flushed.stderr
    disk.make_room()
    flushed = cli("outbox", "flush", "--json", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["delivered"] == 10
    assert len(read_published(isolated.settings, at_least=10)) == 10


@materialize("s3://refused/out", asset_deps=["s3://refused/in"])  # 3 events per run
def refused_once(n: int) -> int:
    add_asset_metadata("s3://refused/out", {"n": n})
    return n


def test_runs_whose_commit_the_outbox_refused_are_committed_later_each_event_once(isolated, monkeypatch):
    # Mocked, because a real full disk cannot be timed to strike between the writer taking the queue
    # and its commit: the writer's first two commits with events fail as SQLite fails on a full disk.
    real_append = Outbox.append
    refused: list[int] = []

    def append(self, rows, owner):  # type: ignore[no-untyped-def]
        rows = list(rows)
        if rows and len(refused) < 2:
            refused.append(sum(len(messages) for _, messages in rows))
            raise sqlite3.OperationalError("database or disk is full")
        return real_append(self, rows, owner)

    monkeypatch.setattr(Outbox, "append", append)

    @flow
    def many(count: int) -> None:
        for n in range(count):
            refused_once(n)

    with Publisher(isolated.settings, flush_timeout=30) as publisher, publishing(publisher):
        many(300)
        assert publisher.flush(30).complete
    events = read_published(isolated.settings, at_least=900, timeout=10)
    per_run: dict[str, int] = {}
    for event in events:
        run_id = event.record["run"]["task_run_id"]
        per_run[run_id] = per_run.get(run_id, 0) + 1
    assert len(events) == 900 and len({e.record["event_id"] for e in events}) == 900
    assert len(per_run) == 300 and set(per_run.values()) == {3}
    assert len(refused) == 2 and refused[0] > 0, refused


def _io_error() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("disk I/O error")  # what SQLite raises for a write the disk refused
    error.sqlite_errorcode = 10  # SQLITE_IOERR (set here: the error is made, not raised by SQLite)
    return error


def test_an_unexplained_io_error_keeps_a_full_episode_full_and_block_mode_still_waits(tmp_path):
    """Room freed between a failed write and the look at the file system: the I/O error reads as
    `unwritable` there, and block mode used to fail the waiting runs at once. The race cannot be
    timed on a real disk, so the gate gets the two reports the writer makes in it."""
    path = tmp_path / "outbox.sqlite3"  # a file system with room: the error is unexplained
    unexplained = outbox_problem(path, _io_error())
    assert unexplained is not None and unexplained.kind == UNWRITABLE and unexplained.unexplained
    gate = OutboxGate("block", 30.0, threading.Condition())
    gate.report(OutboxUnavailable("the file system is full", FULL, path))
    gate.report(unexplained)
    assert gate.problem is not None and gate.problem.kind == FULL
    threading.Timer(0.3, gate.report, args=(None,)).start()  # the writer's next write succeeds
    started = time.monotonic()
    gate.admit("task run r1")  # waits for room instead of raising
    assert 0.2 < time.monotonic() - started < 10


def test_an_unexplained_io_error_with_no_full_episode_still_fails_at_once(tmp_path):
    gate = OutboxGate("block", 30.0, threading.Condition())
    gate.report(outbox_problem(tmp_path / "outbox.sqlite3", _io_error()))
    started = time.monotonic()
    with pytest.raises(OutboxUnavailable, match="cannot write the outbox"):
        gate.admit("task run r1")
    assert time.monotonic() - started < 1
