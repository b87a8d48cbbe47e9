"""The outbox's commit window: finished task runs wait in memory at most that long before
their commit, and whoever needs them durable (a flow's end, a flush, `wait_committed`,
closing, a long queue) ends the window at once.

The outbox is read from a second connection, as another process would; the publishers
here have no broker (`kafka_bootstrap=None`), so committed rows stay in the outbox to be
counted instead of being delivered and deleted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

from assetlog.config import ENV_OUTBOX_COMMIT_WINDOW, Settings
from assetlog.producer import Publisher, flow, materialize, publishing
from assetlog.producer.outbox import Outbox, outbox_path
from assetlog.producer.outbox_writer import COMMIT_WINDOW_MAX_RUNS


@materialize("s3://window/out", asset_deps=["s3://window/in"])  # 2 events per run
def build(n: int) -> int:
    return n


@flow
def runs(count: int) -> None:
    for n in range(count):
        build(n)


def offline(settings: Settings, window: float) -> Settings:
    return replace(settings, kafka_bootstrap=None, outbox_commit_window=window)


def committed_events(directory: Path) -> int:
    if not outbox_path(directory).exists():
        return 0
    outbox = Outbox(directory, read_only=True)
    try:
        return int(outbox.conn.execute("SELECT coalesce(sum(events), 0) FROM outbox").fetchone()[0])
    finally:
        outbox.close()


def wait_for_events(directory: Path, count: int, timeout: float) -> float:
    """Seconds until `count` events are committed (fails after `timeout`)."""
    started = time.monotonic()
    while (found := committed_events(directory)) < count:
        assert time.monotonic() - started < timeout, f"{found} of {count} events committed after {timeout}s"
        time.sleep(0.01)
    return time.monotonic() - started


def test_runs_wait_for_the_window_then_are_committed_without_a_flush(isolated):
    directory = isolated.settings.outbox_dir
    with Publisher(offline(isolated.settings, 1.0)) as publisher, publishing(publisher):
        started = time.monotonic()
        for n in range(3):
            build(n)  # outside a flow: nothing flushes
        time.sleep(0.1)
        held = committed_events(directory)
        wait_for_events(directory, 6, timeout=5.0)
        waited = time.monotonic() - started
        assert held == 0, "committed before the window ended"
        assert 0.9 <= waited < 4.0, f"committed {waited:.2f}s after the first run ended (window 1 s)"


def test_without_a_window_runs_are_committed_at_once(isolated):
    directory = isolated.settings.outbox_dir
    with Publisher(offline(isolated.settings, 0.0)) as publisher, publishing(publisher):
        build(1)
        assert wait_for_events(directory, 2, timeout=5.0) < 0.5


def test_a_flows_end_ends_the_window(isolated):
    with Publisher(offline(isolated.settings, 30.0)) as publisher, publishing(publisher):
        started = time.monotonic()
        runs(5)  # its end waits for the commit: it must not wait for the window
        ended = time.monotonic() - started
        assert committed_events(isolated.settings.outbox_dir) == 10
    assert ended < 5.0, f"the flow's end waited {ended:.1f}s for a 30 s commit window"


def test_wait_committed_ends_the_window(isolated):
    with Publisher(offline(isolated.settings, 30.0)) as publisher, publishing(publisher):
        build(1)
        started = time.monotonic()
        assert publisher.wait_committed(timeout=10.0) is None
        assert time.monotonic() - started < 5.0
        assert committed_events(isolated.settings.outbox_dir) == 2


def test_closing_commits_what_the_window_holds(isolated):
    publisher = Publisher(offline(isolated.settings, 30.0), flush_timeout=0)
    with publishing(publisher):
        build(1)
    started = time.monotonic()
    publisher.close()
    assert time.monotonic() - started < 5.0
    assert committed_events(isolated.settings.outbox_dir) == 2


def test_a_long_queue_ends_the_window(isolated):
    with Publisher(offline(isolated.settings, 30.0)) as publisher, publishing(publisher):
        for n in range(COMMIT_WINDOW_MAX_RUNS):
            build(n)
        wait_for_events(isolated.settings.outbox_dir, 2 * COMMIT_WINDOW_MAX_RUNS, timeout=10.0)


WORKER = """
import sys, time
from assetlog.producer import flow, materialize

@materialize("s3://window/killed", asset_deps=["s3://window/in"])
def build(n):
    return n

@flow
def runs(count):
    for n in range(count):
        build(n)

if sys.argv[1] == "flow":
    runs(20)
else:
    for n in range(20):
        build(n)  # no flow: nothing flushes; only the window's end commits them
print("done", flush=True)
time.sleep(60)
"""


def run_and_kill(isolated, tmp_path: Path, mode: str, window_ms: str, wait_before_kill: float) -> int:
    """Run WORKER (without a broker), SIGKILL it `wait_before_kill` s after its tasks returned;
    returns the events its outbox holds."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    env = {**isolated.env(), ENV_OUTBOX_COMMIT_WINDOW: window_ms}
    env.pop("ASSETLOG_KAFKA_BOOTSTRAP", None)
    process = subprocess.Popen([sys.executable, str(script), mode], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "done"
        time.sleep(wait_before_kill)
        process.send_signal(signal.SIGKILL)  # no atexit, no flush: only what was committed survives
    finally:
        process.kill()
        process.wait(timeout=30)
    return committed_events(isolated.settings.outbox_dir)


def test_events_of_a_flow_survive_sigkill_right_after_it_ended(isolated, tmp_path):
    assert run_and_kill(isolated, tmp_path, "flow", "1000", 0.0) == 40


def test_events_of_tasks_survive_sigkill_once_the_window_passed(isolated, tmp_path):
    assert run_and_kill(isolated, tmp_path, "tasks", "300", 1.5) == 40
