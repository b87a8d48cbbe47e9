"""Drill: consumers SIGKILLed at random moments while events stream in lose and duplicate nothing.

Both `assetlog consume` processes run while a publisher streams events at a
steady rate; at random moments one of them (alternating) is SIGKILLed, with
no warning, whatever it is doing (joining the group, decoding, in the middle
of a COPY or a commit), and started again at once, with default settings:
each restart claims the dead process's slot and so its static group
membership (`group.instance.id`, consumers/membership.py), and the broker
hands it the dead process's partitions at once instead of after a session
timeout. The shared broker and database stay up (only our own processes are
killed).
"""

from __future__ import annotations

import random
import signal
import time

import pytest
from fault_support import (
    PROJECTIONS,
    Stream,
    assert_exact,
    catch_up,
    committed,
    consume_process,
    events_of_runs,
    process_log,
    realistic_runs,
    stop_processes,
)

from assetlog.projections import migrate

pytestmark = pytest.mark.faults


def kill_drill(isolated, stack, kills: int, runs: int, rate: float, seed: int) -> dict:
    migrate(isolated.dsn)
    rng = random.Random(seed)
    events = events_of_runs(realistic_runs(runs, seed=seed))
    stream = Stream(isolated.settings, events, rate=rate).start()

    def start(name: str):
        return consume_process(isolated, name, "--batch-size", "500")

    processes = {name: start(name) for name in PROJECTIONS}
    started = {name: time.monotonic() for name in PROJECTIONS}
    progress_at_kills = []
    try:
        budget = len(events) / rate  # spread the kills over the stream
        for number in range(kills):
            name = PROJECTIONS[number % 2]
            # A random moment; at least the interpreter start-up in, sometimes well into the work.
            wait = rng.uniform(0.2, 2.5 * budget / kills)
            time.sleep(max(0.0, started[name] + wait - time.monotonic()))
            process = processes[name]
            assert process.poll() is None, f"{name} exited on its own: {process_log(process)[-2000:]}"
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            progress_at_kills.append(committed(isolated.dsn, name))
            stop_processes([process])
            processes[name] = start(name)
            started[name] = time.monotonic()
        published = stream.join()
        for process in processes.values():
            assert process.poll() is None, f"a consumer exited on its own: {process_log(process)[-2000:]}"
    finally:
        stop_processes(processes.values())
    # Nothing else running: each projection finishes with a process that is allowed to end.
    for name in PROJECTIONS:
        report = catch_up(isolated, name)
        assert report["stopped_by"] == "caught-up" and report["dead_letters"] == 0
    total = len(published)
    assert total == len(events)
    assert any(0 < done < total for done in progress_at_kills), f"no kill landed mid-stream: {progress_at_kills}"
    counts = assert_exact(isolated, stack, published)
    return {"kills": kills, "events": total, "progress_at_kills": progress_at_kills, **counts}


def test_five_sigkills_during_a_20k_event_stream_lose_and_duplicate_nothing(isolated, stack):
    result = kill_drill(isolated, stack, kills=5, runs=8000, rate=2500, seed=1)
    assert result["events"] >= 20_000


@pytest.mark.slow
def test_twenty_sigkills_during_a_200k_event_stream_lose_and_duplicate_nothing(isolated, stack):
    result = kill_drill(isolated, stack, kills=20, runs=80_000, rate=4000, seed=2)
    assert result["events"] >= 200_000
