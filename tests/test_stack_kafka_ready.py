"""`stack up` waits for a broker that is busy loading partitions, and gives up on one that is not.

A broker holding thousands of partitions (topics left over by test and benchmark runs) took about
90 s to answer here, and `stack up` gave up at a fixed 90 s while the start was going well. The wait
now runs while the broker's log grows. The port below is closed on purpose: nothing answers there,
so these tests see how long the wait goes on. A real broker slow enough to need it would take
minutes to reach that state, so a real process writing a file stands for the busy broker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from assetlog.compose.kafka import KafkaBroker, wait_until_kafka_ready
from assetlog.compose.processes import StackError, free_port


def _writer(path: Path, seconds: float) -> subprocess.Popen:
    """A process that appends a line every 0.2 s for `seconds`, then stays alive and quiet."""
    script = ("import sys, time\n"
              f"end = time.monotonic() + {seconds}\n"
              "with open(sys.argv[1], 'a') as f:\n"
              "    while time.monotonic() < end:\n"
              "        f.write('loading a partition\\n'); f.flush(); time.sleep(0.2)\n"
              "time.sleep(60)\n")
    return subprocess.Popen([sys.executable, "-c", script, str(path)])


def _size(path: Path):
    return lambda: path.stat().st_size if path.exists() else 0


def test_the_wait_goes_on_while_the_log_grows_and_ends_once_it_stops(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    busy = _writer(log, seconds=3.0)
    notes: list[float] = []
    started = time.monotonic()
    try:
        with pytest.raises(StackError) as failure:
            wait_until_kafka_ready(f"127.0.0.1:{free_port()}", busy, timeout=1.5, progress=_size(log),
                                   limit=30, note=notes.append)
    finally:
        busy.kill()
        busy.wait()
    waited = time.monotonic() - started
    # Three seconds of progress, then 1.5 s of quiet: well past the 1.5 s a fixed timeout allowed.
    assert 4.0 <= waited < 10, waited
    assert "without progress" in str(failure.value)
    assert len(notes) == 0  # NOTE_AFTER_SECONDS (20 s) was not reached


def test_the_wait_ends_at_its_limit_however_busy_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    busy = _writer(log, seconds=60.0)
    started = time.monotonic()
    try:
        with pytest.raises(StackError, match=r"did not answer on 127\.0\.0\.1:\d+ within [2-4]s"):
            wait_until_kafka_ready(f"127.0.0.1:{free_port()}", busy, timeout=1.0, progress=_size(log), limit=2.5)
    finally:
        busy.kill()
        busy.wait()
    assert time.monotonic() - started < 6


def test_without_progress_the_wait_is_the_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(StackError, match="did not answer"):
        wait_until_kafka_ready(f"127.0.0.1:{free_port()}", timeout=1.0, progress=lambda: 0, limit=30)
    assert time.monotonic() - started < 4


def test_a_broker_that_exits_is_named_at_once(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    gone.wait()
    with pytest.raises(StackError, match=r"exited during start-up \(code 3\)"):
        wait_until_kafka_ready(f"127.0.0.1:{free_port()}", gone, timeout=5, progress=lambda: 0)


def test_partition_folders_are_counted_and_metadata_folders_are_not(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    data = broker.data_dir
    for name in ("assetlog.materializations-0", "assetlog.materializations-11", "__consumer_offsets-2",
                 "__cluster_metadata-0"):
        (data / name).mkdir(parents=True)
    (data / "meta.properties").write_text("")
    (data / "bootstrap.checkpoint").write_text("")
    assert broker.partition_count() == 4
    assert KafkaBroker(tmp_path / "none").partition_count() == 0


def test_a_port_released_a_moment_later_counts_as_free() -> None:
    """`stack down` then `up`: the stopped broker's ports can stay bound for a few seconds (a restart
    right after a stop here was refused with "port ... is taken by another process")."""
    import socket
    import threading

    from assetlog.compose.processes import port_is_free

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    assert port_is_free(port) is False
    started = time.monotonic()
    assert port_is_free(port, wait_seconds=0.5) is False
    assert time.monotonic() - started >= 0.5
    threading.Timer(1.0, holder.close).start()
    assert port_is_free(port, wait_seconds=10) is True
