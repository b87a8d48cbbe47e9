"""Shared set-up for the web view's tests: Debian packages the tests need, a served app, a browser.

The programs (Graphviz's `dot`, Chromium and its driver) come from the
distribution's packages, installed here when missing and the test runs as
root; otherwise the test fails saying what to install (never skips).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import Isolated, StackEndpoints, create_isolated, drop_isolated
from psycopg import sql

from assetlog.query.store import LineageStore


@pytest.fixture(scope="module", name="world")
def web_world_fixture(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    """One isolated world per test module, loaded with the web tests' assets (shared by API and page tests)."""
    isolated = create_isolated(stack, tmp_path_factory.mktemp("outbox"))
    try:
        load_web_world(isolated.dsn)
        yield isolated
    finally:
        drop_isolated(stack, isolated)


@pytest.fixture(scope="module", name="store")
def web_store_fixture(world: Isolated) -> Iterator[LineageStore]:
    """A read-only store over that world, as `assetlog serve` uses it."""
    from query_world import reader_dsn

    with LineageStore(reader_dsn(world.dsn), pool_size=2) as opened:
        yield opened


ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def ensure_programs(programs: Sequence[str], packages: Sequence[str]) -> list[str]:
    """Paths of `programs`, installing the Debian `packages` that provide them when one is missing."""
    if all(shutil.which(p) for p in programs):
        return [shutil.which(p) or p for p in programs]
    wanted = " ".join(packages)
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.fail(f"these tests need {', '.join(programs)}: install them (e.g. `apt-get install {wanted}`)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=600"]
    install = [*apt, "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # A fresh machine has no package lists yet: fetch them once, then try again.
        subprocess.run([*apt, "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"`apt-get install {wanted}` failed; install it by hand:\n{done.stderr[-2000:]}")
    missing = [p for p in programs if not shutil.which(p)]
    if missing:
        pytest.fail(f"apt-get installed {wanted} but {', '.join(missing)} is still not on PATH")
    return [shutil.which(p) or p for p in programs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(env: Mapping[str, str], *extra: str, timeout: float = 30.0) -> Iterator[str]:
    """`assetlog serve` as a subprocess on a free loopback port; yields its base URL, stops it after.

    Its output goes to a file (a pipe nobody reads could fill and stall the server) and is shown if it
    fails to start.
    """
    port = free_port()
    command = [sys.executable, "-m", "assetlog", "serve", "--host", "127.0.0.1", "--port", str(port), *extra]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, env=dict(env), stdout=output, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + timeout
            while not _answers(f"{base}/healthz"):
                if process.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    pytest.fail(f"assetlog serve did not answer on {base} within {timeout:g}s "
                                f"(exit status {process.poll()}):\n{output.read()}")
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


# --- A database for the web tests: the query tests' scenarios plus hostile text ---------------------

HOSTILE = "s3://hostile/report.csv"
HOSTILE_UPSTREAM = "s3://hostile/upstream.csv"
HOSTILE_DOWNSTREAM = "s3://hostile/downstream.csv"
SPECIAL = "s3://bucket/a+b=c;d,e@f!$(1)*~.csv"  # every URL-special character a valid key may hold
# A key the producer and the consumers refuse (quotes, angle brackets), written straight into the
# tables by `disguise_key`: the pages must stay safe even with data no valid event could carry.
RAW_KEY = "s3://raw/\"><img src=x onerror=alert('key')><script>alert('key')</script>"
RAW_PLACEHOLDER = "s3://hostile/placeholder.csv"

HOSTILE_PROPS = {
    "name": "<script>alert(\"name\")</script>",
    "description": "\"><img src=x onerror=alert('description')> & 'quotes' \"too\"",
    "owners": ["<b onmouseover=alert('owner')>owner</b>", "\"quoted' owner"],
    "url": "javascript:alert('url')",
}
HOSTILE_UPSTREAM_PROPS = {
    "name": "</text></svg><script>alert('svg')</script>",
    "description": None, "owners": ["<i>up</i>"], "url": " JavaScript:alert('spaced')",
}
HOSTILE_METADATA = {"<script>alert('metadata key')</script>": "\"><img src=x onerror=alert('metadata')>",
                    "rows": 3}
HOSTILE_ERROR = ("<svg onload=alert('error type')>", "<img src=x onerror=alert('error message')>")
HOSTILE_TEXTS = [HOSTILE_PROPS["name"], HOSTILE_PROPS["description"], *HOSTILE_PROPS["owners"], HOSTILE_PROPS["url"],
                 *HOSTILE_METADATA, HOSTILE_ERROR[1]]


def hostile_runs() -> list[Any]:
    """A described asset with hostile text everywhere, re-run 25 times (two history pages), then failed."""
    from events_factory import Asset, TaskRun, Upstream, at

    return [
        TaskRun([Asset(HOSTILE, HOSTILE_PROPS)], [Upstream(HOSTILE_UPSTREAM, "EXPLICIT", HOSTILE_UPSTREAM_PROPS)],
                metadata={HOSTILE: {"\"quoted\"": "<b>"}}, time=at(600), task_name="<svg onload=alert('task')>"),
        *(TaskRun([HOSTILE], [HOSTILE_UPSTREAM], time=at(601 + i), task_name=f"rerun_{i:02d}") for i in range(25)),
        TaskRun([HOSTILE], [HOSTILE_UPSTREAM], status="FAILED", error=HOSTILE_ERROR, time=at(650),
                task_name="hostile", metadata={HOSTILE: HOSTILE_METADATA}),
        TaskRun([HOSTILE_DOWNSTREAM], [HOSTILE], time=at(660), task_name="downstream"),
        TaskRun([RAW_PLACEHOLDER], [HOSTILE], time=at(670), task_name="raw"),
        TaskRun([SPECIAL], [HOSTILE_DOWNSTREAM], time=at(680), task_name="special", metadata={SPECIAL: {"ok": True}}),
    ]


def disguise_key(dsn: str, placeholder: str, key: str) -> None:
    """Rename an asset in every projection table, behind the consumers' back (they would refuse `key`)."""
    import psycopg

    renames = [("assets", "key"), ("asset_properties", "key"), ("asset_edges", "upstream_key"),
               ("asset_edges", "downstream_key"), ("lineage_history", "asset_key"),
               ("lineage_history", "upstream_key")]
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")  # past the append-only trigger
        for table, column in renames:
            conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                sql.Identifier(table), sql.Identifier(column), sql.Identifier(column)), (key, placeholder))


def load_web_world(dsn: str) -> None:
    """The query tests' scenarios, the hostile runs (through the real projections), then the raw key."""
    from query_world import all_runs, project

    project(dsn, all_runs() + hostile_runs())
    disguise_key(dsn, RAW_PLACEHOLDER, RAW_KEY)


class TagCollector(HTMLParser):
    """Every element and attribute an HTML parser sees, for asserting nothing was injected."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_nothing_injected(html: str) -> str:
    """Fail if the page holds a script, an image, an event handler or a javascript: link; return its text."""
    parsed = TagCollector()
    parsed.feed(html)
    parsed.close()
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "img", "iframe", "object", "embed", "b", "i"), (tag, attrs)
        if tag == "svg":
            assert attrs.get("class") == "lineage", attrs  # only the lineage picture
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            assert not (value or "").strip().lower().startswith(("javascript:", "data:")), (tag, name, value)
    return "".join(parsed.text)
