"""Helpers for the replay tests: realistic event streams, a second database, the CLI, live consumers.

Streams are generated as the producer's task runs (events_factory.TaskRun),
encoded up front and published with a raw producer, so 10k+ events take a
second; every test runs on the real broker and database of its `isolated`
world.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import psycopg
from conftest import Isolated, StackEndpoints, dsn_for_database
from events_factory import EPOCH, Asset, EventRecord, TaskRun, Upstream, props
from psycopg import sql

from assetlog.consumers import ProjectionRunner
from assetlog.projections.warm import READ_PATH


def in_shared_buffers(dsn: str, create: bool = True) -> dict[str, tuple[int, int]]:
    """Per read-path relation of the live schema: (its blocks in shared buffers, its blocks). A standby
    cannot create pg_buffercache (`create=False`): it gets the extension from its primary."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if create:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
        rows = conn.execute(
            "WITH cached AS (SELECT relfilenode, count(DISTINCT relblocknumber) AS blocks FROM pg_buffercache "
            "  WHERE relforknumber = 0 AND reldatabase = (SELECT oid FROM pg_database "
            "  WHERE datname = current_database()) GROUP BY relfilenode) "
            "SELECT c.relname, coalesce(cached.blocks, 0), pg_relation_size(c.oid) / current_setting('block_size')::int "
            "FROM pg_class c LEFT JOIN cached ON cached.relfilenode = pg_relation_filenode(c.oid) "
            "WHERE c.relname = ANY(%s) AND c.relnamespace = 'public'::regnamespace",
            ([name for name, *_ in READ_PATH],)).fetchall()
    return {name: (int(cached), int(blocks)) for name, cached, blocks in rows}


def realistic_runs(n_events: int, seed: int = 5, start: float = 0.0) -> list[EventRecord]:
    """Task runs over a few hundred keys until `n_events` events exist: properties a third of the
    time (full overwrites), 0-3 upstreams (some explicit, some external with properties),
    metadata half the time, a few failures; event times increase with a little jitter."""
    rng = random.Random(seed)
    keys = [f"s3://lake/l{i % 5}/t{i}.parquet" for i in range(max(20, n_events // 25))]
    events: list[EventRecord] = []
    i = 0
    while len(events) < n_events:
        i += 1
        key = rng.choice(keys)
        asset: Asset | str = key
        if rng.random() < 0.33:
            asset = Asset(key, props(f"T{i}", "a table", ["data-team"], None if i % 3 else f"https://c/{i}"))
        upstreams: list[Upstream | str] = []
        for up in rng.sample(keys, rng.randint(0, 3)):
            if up == key:
                continue
            if rng.random() < 0.1:
                upstreams.append(Upstream(up, "EXPLICIT", props(f"ext {up}", owners=["platform"])))
            else:
                upstreams.append(Upstream(up, "EXPLICIT") if rng.random() < 0.2 else up)
        failed = rng.random() < 0.05
        when = EPOCH + timedelta(seconds=start + i, microseconds=rng.randint(0, 999_999))
        metadata = {key: {"rows": rng.randint(0, 10**6)}} if rng.random() < 0.5 else {}
        events += TaskRun([asset], upstreams, metadata=metadata, status="FAILED" if failed else "SUCCEEDED",
                          error=("ValueError", "bad row") if failed else None, time=when,
                          task_name=f"build_{i % 40}").events()
    return events  # whole task runs: a few more than n_events


@contextmanager
def second_database(stack: StackEndpoints, world: Isolated) -> Iterator[Isolated]:
    """Another empty database reading the same topics (a "fresh deployment"), dropped afterwards."""
    database = f"assetlog_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        settings = replace(world.settings, postgres_dsn=dsn_for_database(stack.admin_dsn, database))
        yield Isolated(settings=settings, database=database)
    finally:
        with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def assetlog(world: Isolated, *args: str, timeout: float = 120) -> CliResult:
    """Run `python -m assetlog ARGS` against the world (a separate process, as a user would)."""
    done = subprocess.run([sys.executable, "-m", "assetlog", *args], env=world.env(), capture_output=True,
                          text=True, timeout=timeout)
    return CliResult(done.returncode, done.stdout, done.stderr)


def replay(world: Isolated, *args: str) -> dict:
    """`assetlog replay ARGS --json`, which must succeed; returns its summary."""
    result = assetlog(world, "replay", *args, "--json")
    assert result.code == 0, (result.code, result.stdout[-2000:], result.stderr[-2000:])
    return result.json()


def stored_offsets(dsn: str, projection: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(dsn) as conn:
        return {(t, p): o for t, p, o in conn.execute(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE projection = %s", (projection,))}


class LiveConsumer:
    """A projection's live consumer on a thread, as `assetlog consume NAME` runs it."""

    def __init__(self, world: Isolated, projection: str, batch_size: int = 500) -> None:
        self.runner = ProjectionRunner(projection, world.settings, batch_size=batch_size)
        self.thread = threading.Thread(target=self._run, name=f"live-{projection}", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> LiveConsumer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the live consumer did not stop"
        if self.error is not None:
            raise self.error

    def wait_for(self, dsn: str, ends: dict[tuple[str, int], int], timeout: float = 60) -> None:
        """Until the offsets stored for this projection reach `ends`."""
        deadline = time.monotonic() + timeout
        name = self.runner.projection.name
        while True:
            if self.error is not None:
                raise self.error
            stored = stored_offsets(dsn, name)
            if all(stored.get(tp, 0) >= end for tp, end in ends.items()):
                return
            assert time.monotonic() < deadline, f"{name} stuck at {stored}, wants {ends}"
            time.sleep(0.05)
