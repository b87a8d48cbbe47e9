"""Run the real `assetlog ingest openlineage` command for a test, and project what it published."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import Isolated

from assetlog.consumers import run_until_caught_up


def migrate(world: Isolated) -> None:
    done = subprocess.run([sys.executable, "-m", "assetlog", "db", "migrate"], env=world.env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def project(world: Isolated) -> None:
    for name in ("properties", "lineage"):
        run_until_caught_up(name, world.settings)


@contextmanager
def receiver(world: Isolated, *args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`assetlog ingest openlineage --listen 127.0.0.1:0 ARGS` (with --no-auth unless ARGS ask for
    credentials); yields (base URL, process).

    Its stderr goes to a file (a pipe nobody reads would block it once full of warnings)."""
    if not {"--require-token", "--api-key-env"} & set(args):
        args = ("--no-auth", *args)  # loopback, as a test's client is
    log_path = world.settings.outbox_dir.parent / f"receiver-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "assetlog", "ingest", "openlineage", "--listen", "127.0.0.1:0", *args, "--json"],
            env=world.env(**env), stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"http://127\.0\.0\.1:(\d+)/", log_path.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{match.group(1)}", process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=60)


def write_client_config(path: Path, transport: str) -> Path:
    """An `openlineage.yml` (the client's own settings file) with this transport block."""
    path.write_text("transport:\n" + transport)
    return path


def wait_until(condition, timeout: float = 30.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)
