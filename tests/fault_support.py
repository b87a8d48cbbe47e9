"""Shared machinery of the fault drills: a private stack to break, streams, consumers, checks.

Drills that stop or kill a server start their own broker and PostgreSQL in a
folder under /tmp (the postgres user must reach it), so tests running against
the shared stack at the same time never notice. Every drill ends the same way:
exact counts against what was published, the tables identical to a projection
of the same events that nothing interrupted, and `assetlog replay all --check`
clean.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from conftest import Isolated, StackEndpoints, create_isolated, drop_isolated, dsn_for_database
from events_factory import (
    Asset,
    EventRecord,
    Publisher,
    TaskRun,
    Upstream,
    apply_directly,
    dump_tables,
    props,
    published_ends,
)
from psycopg import sql

from assetlog.compose.kafka import KafkaBroker
from assetlog.compose.postgres import PostgresCluster
from assetlog.config import Settings
from assetlog.projections import Position, migrate
from assetlog.schemas import decode, encode

# librdkafka's statistics of a consumer that dropped every broker (recorded from a wedged client): what a
# test hands a `NoBrokerWatch` by hand, since a real broker leaves a client so only by chance.
CONSUMER_KNOWING_NO_BROKER = json.dumps({"brokers": {"GroupCoordinator": {
    "name": "GroupCoordinator", "source": "logical", "state": "TRY_CONNECT", "nodeid": -1}}})

PROJECTIONS = ("properties", "lineage")


# --- a private stack -----------------------------------------------------------------------------------

def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETLOG_")}
    env.update(extra)
    return env


@dataclass
class PrivateStack:
    """A broker and a PostgreSQL of this test module's own, which it may stop, kill and restart."""

    home: Path
    endpoints: StackEndpoints

    @property
    def kafka(self) -> KafkaBroker:
        return KafkaBroker(self.home / "kafka")

    @property
    def postgres(self) -> PostgresCluster:
        return PostgresCluster(self.home / "postgres")

    @classmethod
    @contextmanager
    def running(cls, *up_args: str) -> Iterator[PrivateStack]:
        """`assetlog stack up` on a fresh folder (about 7 s), `down --purge` afterwards.

        Runs the CLI in a subprocess with no ASSETLOG_ variables: the shared
        stack's variables would make `up` take its servers as "configured
        elsewhere" and start nothing.
        """
        home = Path(tempfile.mkdtemp(prefix="assetlog-drill-", dir="/tmp"))
        home.chmod(0o755)
        # A drill's database is small and short-lived: not a quarter of the machine's memory each.
        env = _clean_env(ASSETLOG_STACK_DIR=str(home), ASSETLOG_STACK_POSTGRES_SHARED_BUFFERS="128MB")
        try:
            up = subprocess.run([sys.executable, "-m", "assetlog", "stack", "up", "--json", *up_args], env=env,
                                capture_output=True, text=True, timeout=240, check=False)
            assert up.returncode == 0, f"the private stack did not start: {up.stderr[-2000:]}"
            started = json.loads(up.stdout)
            yield cls(home, StackEndpoints(bootstrap=started["kafka"]["bootstrap"],
                                           admin_dsn=started["postgres"]["dsn"]))
        finally:
            subprocess.run([sys.executable, "-m", "assetlog", "stack", "down", "--purge"], env=env,
                           capture_output=True, text=True, timeout=120, check=False)
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def private() -> Iterator[PrivateStack]:
    """A private stack for the drill module that asks for it (each module gets its own), purged after."""
    with PrivateStack.running() as stack:
        yield stack


@pytest.fixture
def world(private: PrivateStack, tmp_path: Path) -> Iterator[Isolated]:
    """A migrated database, topic prefix and outbox of one drill's own on the private stack.

    Afterwards the broker is started again if the drill left it stopped (a failed drill must not
    leave the next one without a broker). Drill modules import both fixtures from here.
    """
    created = create_isolated(private.endpoints, tmp_path / "outbox")
    migrate(created.dsn)
    try:
        yield created
    finally:
        drop_isolated(private.endpoints, created)
        if not private.kafka.running_pid():
            private.kafka.start()


# --- streams of valid events -----------------------------------------------------------------------------

def realistic_runs(count: int, seed: int, keys: int = 400) -> list[TaskRun]:
    """Task runs like a busy deployment's: 0-3 upstreams, metadata half the time, properties
    a fifth of the time, some failures, explicit dependencies, keys reused across runs."""
    rng = random.Random(seed)
    names = [f"s3://lake/drill/t{i}.parquet" for i in range(keys)]
    runs = []
    for i in range(count):
        key = names[rng.randrange(keys)]
        ups = [Upstream(u, "EXPLICIT" if rng.random() < 0.2 else "INFERRED",
                        props(f"up {u}") if rng.random() < 0.1 else None)
               for u in rng.sample(names, rng.randint(0, 3)) if u != key]
        failed = rng.random() < 0.05
        runs.append(TaskRun(
            [Asset(key, props(f"T{i}", "drill table", ["team"]) if rng.random() < 0.2 else None)], ups,
            metadata={key: {"rows": i, "ok": not failed}} if rng.random() < 0.5 else {},
            status="FAILED" if failed else "SUCCEEDED", error=("ValueError", f"row {i}") if failed else None,
            time=_time(seed, i), task_name=f"build_{i % 37}"))
    return runs


def _time(seed: int, i: int):
    from events_factory import at

    return at(seed * 10_000_000 + i * 0.25 + (i % 7) * 1e-6)


def events_of_runs(runs: Iterable[TaskRun]) -> list[EventRecord]:
    return [event for run in runs for event in run.events()]


@dataclass
class Stream:
    """Publishes events from a thread at a steady rate; `published` holds each with its position."""

    settings: Settings
    events: Sequence[EventRecord]
    rate: float  # events per second
    published: list[tuple[str, dict[str, Any], Position]] = field(default_factory=list)
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Stream:
        self._thread = threading.Thread(target=self._run, name="drill-stream", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            publisher = Publisher(self.settings)
            started = time.monotonic()
            chunk = max(1, int(self.rate / 20))  # 20 flushes a second
            for first in range(0, len(self.events), chunk):
                part = self.events[first:first + chunk]
                publisher.positions.clear()
                for event_type, record in part:
                    publisher.event(event_type, record)
                publisher.flush()
                self.published += [(t, r, p) for (t, r), p in zip(part, publisher.positions, strict=True)]
                ahead = started + (first + len(part)) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def join(self, timeout: float = 300) -> list[tuple[str, dict[str, Any], Position]]:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not finish"
        if self.error is not None:
            raise self.error
        return self.published


# --- Kafka and PostgreSQL positions ----------------------------------------------------------------------

def topic_ends(settings: Settings, topics: Iterable[str] | None = None) -> dict[tuple[str, int], int]:
    """High-water marks of every partition of the event topics (non-empty partitions only)."""
    consumer = Consumer(settings.kafka_client_config(required={"group.id": f"drill-ends-{uuid.uuid4()}"}))
    ends = {}
    try:
        for topic in topics or settings.topics.events:
            for partition in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1]
                if high:
                    ends[(topic, partition)] = high
    finally:
        consumer.close()
    return ends


def stored_offsets(dsn: str, projection: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(dsn, application_name="drill.observer", connect_timeout=5) as conn:
        return {(t, p): o for t, p, o in conn.execute(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE projection = %s", (projection,))}


def committed(dsn: str, projection: str) -> int:
    """Messages a projection has committed so far (0 while PostgreSQL is away)."""
    try:
        return sum(stored_offsets(dsn, projection).values())
    except psycopg.OperationalError:
        return 0


def read_dead_letters(settings, dlq: str, count: int) -> list[bytes]:
    """The values of the first `count` messages on the dead-letter topic, by original offset."""
    consumer = Consumer(settings.kafka_client_config(required={"group.id": f"t-{uuid.uuid4()}"}))
    try:
        consumer.assign([TopicPartition(dlq, p, 0) for p in consumer.list_topics(dlq, timeout=10).topics[dlq].partitions])
        copies = []
        while len(copies) < count:
            message = consumer.poll(10)
            assert message is not None and message.error() is None
            copies.append(message)
        assert consumer.poll(1) is None  # and no more: each copied once
    finally:
        consumer.close()
    return [m.value() for m in sorted(copies, key=lambda m: dict(m.headers())["assetlog.original.offset"])]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting: {what}"
        time.sleep(poll)


def wait_until_projected(world: Isolated, timeout: float = 180.0, projections: Sequence[str] = PROJECTIONS,
                         processes: Sequence[subprocess.Popen[str]] = ()) -> None:
    """Both projections' stored offsets reach the ends of every event topic; the consumer
    `processes` given must stay alive meanwhile (their logs explain a failure)."""
    ends = topic_ends(world.settings)

    def caught_up() -> bool:
        for process in processes:
            assert process.poll() is None, f"a consumer exited:\n{process_log(process)[-3000:]}"
        return all(stored_offsets(world.dsn, name) == ends for name in projections)

    try:
        wait_for(caught_up, f"projections at {sum(ends.values())} messages", timeout, poll=0.25)
    except AssertionError as exc:
        logs = "\n".join(process_log(p)[-4000:] for p in processes)
        raise AssertionError(f"{exc}\nconsumer logs:\n{logs}") from None


# --- consumers as processes ------------------------------------------------------------------------------

def consume_process(world: Isolated, projection: str, *extra: str, **env: str) -> subprocess.Popen[str]:
    """`assetlog consume PROJECTION` as a real process (its log goes to a file, never a full pipe). Not
    `--quiet`: when a drill fails, its assignments and rebalances (INFO) say where the consumer stood."""
    log = tempfile.NamedTemporaryFile(prefix=f"drill-{projection}-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "assetlog", "consume", projection, "--json", *extra],
        env=world.env(**env), stdout=subprocess.PIPE, stderr=log, text=True)
    process.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    return process


def process_log(process: subprocess.Popen[str]) -> str:
    path = getattr(process, "log_path", None)
    return Path(path).read_text(errors="replace") if path else ""


def stop_processes(processes: Iterable[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        with suppress(subprocess.TimeoutExpired):
            process.wait(10)
        path = getattr(process, "log_path", None)
        if path:
            with suppress(OSError):
                os.unlink(path)


def catch_up(world: Isolated, projection: str, timeout: float = 300, **env: str) -> dict[str, Any]:
    """Run `assetlog consume PROJECTION --until-caught-up` to the end; returns its JSON report."""
    process = consume_process(world, projection, "--until-caught-up", **env)
    try:
        out, _ = process.communicate(timeout=timeout)
        assert process.returncode == 0, process_log(process)[-3000:]
        return json.loads(out)
    finally:
        stop_processes([process])


# --- the verdict -------------------------------------------------------------------------------------------

@contextmanager
def scratch_database(endpoints: StackEndpoints, tag: str) -> Iterator[str]:
    """A migrated database of its own on the same server, dropped afterwards."""
    name = f"assetlog_drill_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(endpoints.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = dsn_for_database(endpoints.admin_dsn, name)
        migrate(dsn)
        yield dsn
    finally:
        with psycopg.connect(endpoints.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def uninterrupted_dump(endpoints: StackEndpoints, published: Sequence[tuple[str, dict[str, Any], Position]]) -> dict:
    """The tables a single, uninterrupted projection of exactly these events gives.

    Each record goes through the codec first, so it is what a consumer reads (e.g. with the
    defaults of fields a newer reader schema adds)."""
    as_read = [(*decode(encode(event_type, record)), position) for event_type, record, position in published]
    with scratch_database(endpoints, "expected") as dsn:
        with psycopg.connect(dsn) as conn:
            for name in PROJECTIONS:
                apply_directly(conn, name, as_read)
        return dump_tables(dsn)


def table_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()[0]
                for name in ("lineage_history", "asset_edges", "assets", "asset_properties", "dead_letters")}


def expected_counts(published: Sequence[tuple[str, dict[str, Any], Any]]) -> dict[str, int]:
    """Row counts that follow from the events alone: one history row per distinct event id, one
    edge per (upstream, downstream), one asset per key named anywhere."""
    ids, edges, keys, described = set(), set(), set(), set()
    for event_type, record, _ in published:
        ids.add(record["event_id"].lower())
        if event_type == "dependency":
            edges.add((record["upstream_key"], record["downstream_key"]))
            keys.update((record["upstream_key"], record["downstream_key"]))
            if record.get("upstream_properties") is not None:
                described.add(record["upstream_key"])
        else:
            keys.add(record["asset_key"])
            keys.update(record.get("upstream_keys") or ())
            if record.get("properties") is not None:
                described.add(record["asset_key"])
    return {"lineage_history": len(ids), "asset_edges": len(edges), "assets": len(keys),
            "asset_properties": len(described), "dead_letters": 0}


def replay_check(world: Isolated, timeout: float = 300) -> dict[str, Any]:
    """`assetlog replay all --check --json`: rebuild both projections from Kafka and compare."""
    result = subprocess.run([sys.executable, "-m", "assetlog", "replay", "all", "--check", "--json"],
                            env=world.env(), capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"replay --check found drift or failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def assert_exact(world: Isolated, endpoints: StackEndpoints,
                 published: Sequence[tuple[str, dict[str, Any], Position]]) -> dict[str, int]:
    """0 lost, 0 duplicated: offsets at the ends, exact counts, tables identical to an
    uninterrupted projection, and replay --check clean."""
    ends = published_ends(published)
    for name in PROJECTIONS:
        assert stored_offsets(world.dsn, name) == ends, f"{name} did not reach the end of every partition"
    counts = table_counts(world.dsn)
    assert counts == expected_counts(published)
    assert dump_tables(world.dsn) == uninterrupted_dump(endpoints, published)
    replay_check(world)
    return counts
