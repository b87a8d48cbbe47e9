"""Helpers for the tests that need a real `prefect server start` (slow: see their markers)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, path: str, body: dict | None = None) -> object:
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(name="prefect_server")
def prefect_server_fixture(tmp_path):
    """`prefect server start` on a free port of 127.0.0.1, with its own PREFECT_HOME."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ASSETLOG_"))}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1"})
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if api(url, "/health") is True:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "prefect server did not start"
            time.sleep(1)
        env["PREFECT_API_URL"] = url
        yield url, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the services it started: our session only
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def stored_asset_events(url: str, prefix: str, at_least: int, timeout: float = 90) -> list[dict]:
    """The server's stored events under `prefix`, once there are `at_least` (it stores them a moment late)."""
    deadline = time.monotonic() + timeout
    while True:
        events = api(url, "/events/filter", {"filter": {"event": {"prefix": [prefix]}, "order": "ASC"},
                                             "limit": 50})["events"]  # type: ignore[index]
        if len(events) >= at_least or time.monotonic() > deadline:
            return events
        time.sleep(1)
