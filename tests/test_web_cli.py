"""`assetlog serve` as a process: it checks the database before listening, and every mistake a user can
make (no DSN, an unreachable or unmigrated database, a busy port) is one line and a non-zero status."""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request

from conftest import Isolated
from query_world import reader_dsn

from assetlog.config import ENV_POSTGRES_DSN, ENV_POSTGRES_READONLY_DSN
from assetlog.projections import migrate

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", "serve", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def one_line_error(done: subprocess.CompletedProcess[str], status: int, starts: str) -> None:
    assert done.returncode == status, done.stderr
    assert done.stderr.startswith(starts) and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stdout == ""


def test_port_zero_picks_a_free_port_and_a_busy_port_is_one_line(isolated: Isolated) -> None:
    migrate(isolated.dsn)
    env = isolated.env(**{ENV_POSTGRES_READONLY_DSN: reader_dsn(isolated.dsn)})
    process = subprocess.Popen([sys.executable, "-m", "assetlog", "serve", "--port", "0", "--no-auth"], env=env,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        found = re.fullmatch(r"assetlog: serving the web view on (http://127\.0\.0\.1:(\d+)/) \(read-only; "
                             r"Ctrl-C stops it\)\n", first)
        assert found, first
        with urllib.request.urlopen(found.group(1) + "api/assets", timeout=10) as answer:
            assert json.load(answer)["assets"] == []
        # Kept-alive requests are not held back by Nagle's algorithm (~40 ms each for a delayed ACK).
        connection = http.client.HTTPConnection("127.0.0.1", int(found.group(2)), timeout=10)
        latencies = []
        for _ in range(9):
            started = time.perf_counter()
            connection.request("GET", "/healthz")
            assert connection.getresponse().read() == b'{"status":"ok"}'
            latencies.append(time.perf_counter() - started)
        connection.close()
        assert statistics.median(latencies) < 0.025, latencies
        busy = serve(env, "--port", found.group(2))
        one_line_error(busy, 1, f"assetlog: port {found.group(2)} on 127.0.0.1 is already in use")
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0  # SIGTERM is a clean stop


def test_an_unmigrated_database_is_refused_before_listening(isolated: Isolated) -> None:
    one_line_error(serve(isolated.env(), "--port", "0"), 1, "assetlog: the database is at schema version 0")


def test_an_unreachable_database_is_one_line(isolated: Isolated) -> None:
    done = serve(isolated.env(**{ENV_POSTGRES_READONLY_DSN: UNREACHABLE}), "--port", "0")
    one_line_error(done, 1, "assetlog: cannot reach PostgreSQL")


def test_no_dsn_is_a_configuration_error(isolated: Isolated) -> None:
    env = {k: v for k, v in isolated.env().items() if k not in (ENV_POSTGRES_DSN, ENV_POSTGRES_READONLY_DSN)}
    one_line_error(serve(env), 2, f"assetlog: neither {ENV_POSTGRES_READONLY_DSN} nor {ENV_POSTGRES_DSN} is set")


def test_bad_arguments_are_usage_errors() -> None:
    done = serve({}, "--port", "70000")
    assert done.returncode == 2 and "--port" in done.stderr and "from 0 to 65535" in done.stderr


def test_pictures_kept_is_a_bounded_option_whose_help_names_the_drawers_default() -> None:
    from assetlog.web.picture import CACHED_PICTURES

    done = serve({}, "--help")
    assert done.returncode == 0 and f"(default {CACHED_PICTURES};" in " ".join(done.stdout.split())
    one_line_error(serve({}, "--pictures", "-1"), 2, "assetlog serve: error: argument --pictures:")
