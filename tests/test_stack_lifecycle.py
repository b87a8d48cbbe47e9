"""`assetlog stack` on its own state folder: idempotent up, down leaves nothing, failures explained.

These start a second, private broker and PostgreSQL (real processes) so they
never disturb the stack the rest of the suite uses.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest


def _run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", "stack", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _our_processes(home: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(home) in cmdline and state != "Z" and "pytest" not in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def private_stack():
    # Under /tmp itself: the postgres user must be able to reach the folder.
    home = Path(tempfile.mkdtemp(prefix="assetlog-stack-test-", dir="/tmp"))
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETLOG_")}
    env["ASSETLOG_STACK_DIR"] = str(home)
    env["ASSETLOG_STACK_POSTGRES_SHARED_BUFFERS"] = "160MB"  # not a quarter of the machine for a private stack
    yield home, env
    _run(env, "down", "--purge")
    shutil.rmtree(home, ignore_errors=True)


def test_up_twice_leaves_one_of_each_and_down_leaves_none(private_stack):
    home, env = private_stack
    first = _run(env, "up", "--json")
    assert first.returncode == 0, first.stderr
    started = json.loads(first.stdout)
    assert started["kafka"]["reused"] is False and started["postgres"]["reused"] is False
    processes = _our_processes(home)
    with psycopg.connect(started["postgres"]["dsn"], autocommit=True) as conn:
        assert conn.execute("SHOW shared_buffers").fetchone() == ("160MB",)
        assert "pg_prewarm" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    second = _run(env, "up", "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["kafka"]["reused"] is True and again["postgres"]["reused"] is True
    assert again["kafka"]["pid"] == started["kafka"]["pid"]
    assert sorted(_our_processes(home)) == sorted(processes)

    exports = _run(env, "env")
    assert exports.returncode == 0
    assert f"export ASSETLOG_KAFKA_BOOTSTRAP={started['kafka']['bootstrap']}" in exports.stdout
    assert "export ASSETLOG_POSTGRES_DSN=postgresql://" in exports.stdout

    down = _run(env, "down", "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["stopped"] == {"kafka": True, "postgres": True}
    assert _our_processes(home) == []
    status = _run(env, "status", "--json")
    assert status.returncode == 3
    assert json.loads(status.stdout)["kafka"]["running"] is False


def test_stale_pid_file_is_ignored_and_a_taken_port_is_explained(private_stack):
    home, env = private_stack
    assert _run(env, "up").returncode == 0
    assert _run(env, "down").returncode == 0
    # A pid file left by a crash, naming a process that no longer exists.
    (home / "kafka" / "kafka.pid").write_text("999999\n")
    broker_port = int((home / "kafka" / "ports").read_text().split()[0])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", broker_port))
        squatter.listen()
        blocked = _run(env, "up")
    assert blocked.returncode == 1
    assert blocked.stderr.count("\n") == 1 and "Traceback" not in blocked.stderr
    assert f"port {broker_port}" in blocked.stderr and "taken" in blocked.stderr
    assert _our_processes(home) == []  # nothing half-started
    restarted = _run(env, "up", "--json")
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads(restarted.stdout)["kafka"]["reused"] is False


def test_env_without_a_running_stack_says_how_to_start_it(private_stack):
    _, env = private_stack
    result = _run(env, "env")
    assert result.returncode == 1
    assert "assetlog stack up" in result.stderr


def test_two_ups_at_once_start_one_broker_that_the_stack_knows(private_stack):
    """The suite's two workers each make sure the stack runs: started together, one starts the servers
    and the other reuses them; the pid files name what runs, and `down` stops it all."""
    home, env = private_stack
    ups = [subprocess.Popen([sys.executable, "-m", "assetlog", "stack", "up", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [up.communicate(timeout=180) for up in ups]
    assert [up.returncode for up in ups] == [0, 0], [err for _out, err in results]
    reports = [json.loads(out) for out, _err in results]
    assert sorted(r["kafka"]["reused"] for r in reports) == [False, True]
    assert reports[0]["kafka"]["pid"] == reports[1]["kafka"]["pid"]
    status = json.loads(_run(env, "status", "--json").stdout)
    assert status["kafka"]["pid"] == reports[0]["kafka"]["pid"] and status["kafka"]["running"] is True
    down = _run(env, "down", "--json")
    assert json.loads(down.stdout)["stopped"] == {"kafka": True, "postgres": True}
    assert _our_processes(home) == []
