"""Queries from a hot standby: `assetlog stack up --standby` and a reader that outlives a replay swap.

The standby is a real streaming replica (`pg_basebackup -R`) of a private
stack's PostgreSQL. The consumers write on the primary; the query API, pointed
at the standby by ASSETLOG_POSTGRES_READONLY_DSN, sees what they wrote; and a
reader on the standby keeps answering while `assetlog replay all` swaps the
tables on the primary, although the standby cancels its queries whenever their
locks hold up the replay of that swap.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import Isolated, create_isolated, drop_isolated, dsn_for_database
from fault_support import PrivateStack, _clean_env
from replay_support import in_shared_buffers

from assetlog.projections import migrate
from assetlog.projections.warm import READ_PATH
from assetlog.query import LineageStore

pytestmark = pytest.mark.timeout(600)
KEY = "s3://my-bucket/downstream.csv"


@pytest.fixture(scope="module")
def private() -> Iterator[PrivateStack]:
    with PrivateStack.running("--standby") as stack:
        yield stack


@pytest.fixture(scope="module")
def standby(private: PrivateStack) -> dict[str, object]:
    status = subprocess.run([sys.executable, "-m", "assetlog", "stack", "status", "--json"],
                            env=_clean_env(ASSETLOG_STACK_DIR=str(private.home)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)["standby"]


@pytest.fixture(scope="module")
def world(private: PrivateStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    """The guide's pipelines projected on the primary (the demo reads back from the primary)."""
    created = create_isolated(private.endpoints, tmp_path_factory.mktemp("outbox"))
    migrate(created.dsn)
    demo = subprocess.run([sys.executable, "-m", "assetlog", "demo", "--json"], env=created.env(),
                          capture_output=True, text=True, timeout=180, check=False)
    assert demo.returncode == 0, demo.stderr[-2000:]
    try:
        yield created
    finally:
        drop_isolated(private.endpoints, created)


def _standby_reader(standby: dict[str, object], database: str) -> str:
    return dsn_for_database(str(standby["dsn"]), database).replace("postgres@", "assetlog_reader@", 1)


def _caught_up(store: LineageStore, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(store.search(limit=100).assets) == 13:
            return
        time.sleep(0.1)
    raise AssertionError("the standby did not show the primary's 13 assets")


def test_stack_status_reports_the_streaming_standby(standby: dict[str, object]) -> None:
    assert standby["reachable"] is True and standby["standby"] is True
    assert isinstance(standby["bytes_behind"], int) and standby["bytes_behind"] >= 0
    with psycopg.connect(dsn_for_database(str(standby["dsn"]), "postgres"), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_projection_written_on_the_primary_is_read_from_the_standby(standby, world: Isolated) -> None:
    with LineageStore(_standby_reader(standby, world.database)) as store:
        _caught_up(store)
        upstream = {node.key for node in store.upstream(KEY).nodes}
        assert {"s3://my-bucket/upstream.csv", "s3://my-bucket/config.json"} <= upstream
    # The query CLI on the standby, through the documented variable only.
    shown = subprocess.run([sys.executable, "-m", "assetlog", "show", KEY, "--json"],
                           env=world.env(ASSETLOG_POSTGRES_READONLY_DSN=_standby_reader(standby, world.database)),
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["key"] == KEY


def test_reader_on_the_standby_survives_replay_swaps_on_the_primary(standby, world: Isolated) -> None:
    # Cancel conflicting standby queries at once (default: after 30 s), so every swap that meets a
    # reader's lock is a real "canceling statement due to conflict with recovery".
    with psycopg.connect(dsn_for_database(str(standby["dsn"]), "postgres"), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
        conn.execute("SELECT pg_reload_conf()")
    failures: list[BaseException] = []
    answered = 0
    stop = threading.Event()

    def slow_question(conn: psycopg.Connection) -> int:
        # Holds the tables' locks for a while, like a big lineage walk would.
        count = conn.execute("SELECT count(*) FROM assets, pg_sleep(0.2)").fetchone()[0]
        return count + conn.execute("SELECT count(*) FROM asset_edges").fetchone()[0]

    with LineageStore(_standby_reader(standby, world.database)) as store:
        _caught_up(store)

        def read_forever() -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    assert store.read(slow_question) == 13 + 6
                    assert len(store.upstream(KEY).nodes) == 3
                    answered += 1
                except BaseException as exc:  # collected and reported by the test
                    failures.append(exc)
                    return

        reader = threading.Thread(target=read_forever, daemon=True)
        reader.start()
        try:
            for _ in range(4):
                replay = subprocess.run([sys.executable, "-m", "assetlog", "replay", "all", "--json"],
                                        env=world.env(), capture_output=True, text=True, timeout=180, check=False)
                assert replay.returncode == 0, replay.stderr[-2000:]
                if store.recovery_conflicts:
                    break
            time.sleep(0.5)
        finally:
            stop.set()
            reader.join(timeout=30)
    assert failures == [], failures
    assert store.recovery_conflicts > 0, "no swap met the reader: the retry went untested"
    assert answered > 0


def test_a_replay_warms_the_standby_that_queries_read(standby, world: Isolated) -> None:
    """The standby replays a swap as new relations with nothing of them in its own shared buffers;
    the replay waits until the standby has replayed the swap, then warms the same relations there."""
    reader = _standby_reader(standby, world.database)
    in_shared_buffers(world.dsn)  # creates pg_buffercache on the primary; the standby gets it from there
    replay = subprocess.run([sys.executable, "-m", "assetlog", "replay", "all", "--json"],
                            env=world.env(ASSETLOG_POSTGRES_READONLY_DSN=reader),
                            capture_output=True, text=True, timeout=180, check=False)
    assert replay.returncode == 0, replay.stderr[-2000:]
    on_standby = json.loads(replay.stdout)["warm"]["standby"]
    assert on_standby["warmed"] is True, on_standby
    assert {r["relation"] for r in on_standby["relations"] if r["loaded"]} == {name for name, *_ in READ_PATH}
    # What users need: right after the swap the standby's read path is in its shared buffers. At this
    # size that holds without the warm too (replaying the swap's WAL, full-page images of the index
    # builds included, passes every page through the standby's buffers; checked by replacing the warm
    # with a fake report), so the warm matters only where the swap and other traffic exceed them.
    standby_admin = dsn_for_database(str(standby["dsn"]), world.database)
    cached = in_shared_buffers(standby_admin, create=False)
    assert all(held == blocks for held, blocks in cached.values()), cached
    # Pointed at the primary, the read-only DSN has no standby to warm: the report says nothing of one.
    again = subprocess.run([sys.executable, "-m", "assetlog", "replay", "lineage", "--json"],
                           env=world.env(ASSETLOG_POSTGRES_READONLY_DSN=world.dsn),
                           capture_output=True, text=True, timeout=180, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["warm"]["standby"] is None
