"""The `assetlog replay` command: progress on stderr, JSON summary, errors as one line."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

import psycopg
from events_factory import dump_tables, publish
from replay_support import assetlog, realistic_runs, replay

from assetlog.consumers import run_until_caught_up
from assetlog.consumers.progress import Progress
from assetlog.consumers.replay import REPLAY_LOCK_KEY
from assetlog.projections import migrate
from assetlog.projections.migrate import shipped_migrations


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    terminal = Terminal()
    bar = Progress.auto("replay all", stream=terminal)
    bar.expect(1000)
    bar.advance(250)
    bar.set_phase("read")
    bar.close()
    assert bar.mode == "bar"
    drawn = terminal.getvalue()
    assert drawn.startswith("\r\x1b[2K") and drawn.endswith("\n")
    last = drawn.rsplit("\r\x1b[2K", 1)[1]
    assert "[#######-----------------------]" in last and " 25%" in last
    assert "250/1,000 events" in last and "events/s" in last and "left" in last and last.rstrip().endswith("read")

    pipe = io.StringIO()
    lines = Progress.auto("replay all", stream=pipe)
    assert lines.mode == "lines"
    lines.expect(10)
    lines.advance(10)
    lines.close()
    assert pipe.getvalue() == ""  # a short run leaves stderr to the outcome
    lines.interval = 0.0
    lines.advance(0)
    assert pipe.getvalue().count("\n") == 1 and "10/10 events" in pipe.getvalue() and "[" not in pipe.getvalue()
    quiet = io.StringIO()
    silent = Progress.auto("replay all", quiet=True, stream=quiet)
    silent.interval = 0.0
    silent.advance(5)
    silent.close()
    assert silent.mode == "off" and quiet.getvalue() == ""


def test_replay_draws_a_progress_bar_when_stderr_is_a_terminal(isolated):
    migrate(isolated.dsn)
    publish(isolated.settings, realistic_runs(2000, seed=51))
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "assetlog", "replay", "all", "--json"], env=isolated.env(),
                              stdout=subprocess.PIPE, stderr=terminal, timeout=120)
        os.close(terminal)
        terminal = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert done.returncode == 0
    text = drawn.decode()
    assert "\x1b[2K" in text and "replay all  [" in text and "events/s" in text and "left" in text
    assert "100%" in text and "events" in text


def test_errors_are_one_line_and_only_one_replay_runs_at_a_time(isolated):
    not_migrated = assetlog(isolated, "replay", "all")
    assert not_migrated.code == 1
    needed = max(m.version for m in shipped_migrations())
    assert not_migrated.stderr.strip().splitlines() == [
        f"assetlog: the database is at schema version 0, this Assetlog needs {needed}: run `assetlog db migrate` first"]

    migrate(isolated.dsn)
    publish(isolated.settings, realistic_runs(300, seed=52))
    for name in ("properties", "lineage"):
        run_until_caught_up(name, isolated.settings)
    before = dump_tables(isolated.dsn)
    with psycopg.connect(isolated.dsn) as other:  # another replay holds the lock
        other.execute("SELECT pg_advisory_lock(%s)", (REPLAY_LOCK_KEY,))
        busy = assetlog(isolated, "replay", "lineage")
    assert busy.code == 1
    assert busy.stderr.strip().splitlines() == [
        "assetlog: another replay is running on this database; wait for it to finish"]
    assert dump_tables(isolated.dsn) == before

    unknown = assetlog(isolated, "replay", "everything")
    assert unknown.code == 2 and "invalid choice: 'everything'" in unknown.stderr


def test_json_summary_of_a_replay(isolated):
    migrate(isolated.dsn)
    published = publish(isolated.settings, realistic_runs(500, seed=53))
    summary = replay(isolated, "properties", "--batch-size", "100")
    assert summary["mode"] == "swap" and summary["projections"] == ["properties"]
    assert summary["messages"] == len(published) and summary["events_per_second"] > 0
    written = summary["written"]["properties"]
    assert written["messages"] == written["events"] == len(published)
    assert 1 <= written["batches"] < len(published) // 100  # batches are folded into fewer transactions
    assert summary["generations"] == {"properties": 1} and summary["swap_attempts"] == 1
    assert set(summary["phases"]) >= {"read", "indexes", "swap"}
    offsets = summary["offsets"]["properties"]
    assert sum(o for parts in offsets.values() for o in parts.values()) == len(published)
    with psycopg.connect(isolated.dsn) as conn:  # the swapped offsets are the live consumer's now
        stored = conn.execute("SELECT sum(next_offset) FROM consumer_offsets WHERE projection = 'properties'"
                              ).fetchone()[0]
    assert stored == len(published)
    assert run_until_caught_up("properties", isolated.settings).messages == 0


def test_an_interrupted_replay_leaves_the_live_tables_and_nothing_else(isolated):
    import signal
    import time

    migrate(isolated.dsn)
    publish(isolated.settings, realistic_runs(40_000, seed=54))
    run_until_caught_up("lineage", isolated.settings)
    before = dump_tables(isolated.dsn)
    child = subprocess.Popen([sys.executable, "-m", "assetlog", "replay", "all", "--workers", "2"],
                             env=isolated.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with psycopg.connect(isolated.dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 120  # generous: the suite's other worker may be loading the box
            def reading() -> bool:
                if conn.execute("SELECT to_regclass('assetlog_shadow.consumer_offsets')").fetchone()[0] is None:
                    return False
                return conn.execute("SELECT EXISTS (SELECT FROM assetlog_shadow.consumer_offsets)").fetchone()[0]

            while not reading():
                assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
                time.sleep(0.02)
        child.send_signal(signal.SIGTERM)  # mid-read: a batch of the shadow is committed
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130 and err.strip().splitlines()[-1] == "assetlog: interrupted"
    assert dump_tables(isolated.dsn) == before
    with psycopg.connect(isolated.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'assetlog_%'").fetchone()[0] == 0
        assert conn.execute("SELECT sum(generation) FROM projection_generations").fetchone()[0] == 0
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:  # a killed worker's sessions end shortly after
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'assetlog.replay%'"
                           ).fetchone()[0]:
            assert time.monotonic() < deadline, "replay sessions left behind"
            time.sleep(0.1)
