"""Faults on the real servers: PostgreSQL connections killed or unreachable, consumers SIGKILLed or stopped.

The shared PostgreSQL is never stopped (other tests use it): its server kills
our connections (`pg_terminate_backend`, a real server-side fault), or a TCP
proxy between the consumer and the server refuses and drops connections (what
a restarting server looks like from the consumer).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from conftest import dsn_for_database
from events_factory import TaskRun, apply_directly, dump_tables, events_of, publish, published_ends
from psycopg import conninfo, sql
from tcp_proxy import TcpProxy

from assetlog.consumers import Backoff, ProjectionRunner, run_until_caught_up
from assetlog.projections import migrate

pytestmark = pytest.mark.faults


def workload(n_runs: int, keys: int = 50) -> list:
    return events_of(TaskRun([f"s3://bucket/t{i % keys}.csv"], [f"s3://bucket/t{(i * 7 + 1) % keys}.csv"],
                             metadata={f"s3://bucket/t{i % keys}.csv": {"i": i}} if i % 2 else {})
                     for i in range(n_runs))


def stored_offsets(dsn: str, projection: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(dsn, application_name="test.observer") as conn:
        return {(t, p): o for t, p, o in conn.execute(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE projection = %s", (projection,))}


def wait_for(condition, what: str, timeout: float = 90.0, alive: threading.Thread | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert alive is None or alive.is_alive(), f"the consumer died while waiting: {what}"
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


@pytest.fixture
def reference_db(stack, isolated):
    """A second database on the same server, for the same events projected without any fault."""
    name = f"{isolated.database}_reference"
    with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = dsn_for_database(stack.admin_dsn, name)
    migrate(dsn)
    yield dsn
    with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def expected_dump(dsn: str, published) -> dict:
    with psycopg.connect(dsn) as conn:
        apply_directly(conn, "properties", published)
        apply_directly(conn, "lineage", published)
    return dump_tables(dsn)


def test_connections_killed_by_the_server_mid_stream_lose_nothing(isolated, reference_db):
    migrate(isolated.dsn)
    published = publish(isolated.settings, workload(3000))
    runners = [ProjectionRunner(name, isolated.settings, batch_size=100, backoff=Backoff(0.02, 0.2))
               for name in ("properties", "lineage")]
    threads = [threading.Thread(target=r.run) for r in runners]
    killed = 0
    for thread in threads:
        thread.start()
    try:
        with psycopg.connect(isolated.dsn, autocommit=True, application_name="test.killer") as killer:
            while any(stored_offsets(isolated.dsn, r.projection.name) != published_ends(published) for r in runners):
                assert all(t.is_alive() for t in threads)
                killed += sum(row[0] for row in killer.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name LIKE 'assetlog.consume.%'"))
                time.sleep(0.1)
    finally:
        for runner in runners:
            runner.stop()
        for thread in threads:
            thread.join(60)
    assert killed >= 4, "the drill never hit a connection"
    assert all(r.stats.retries >= 1 for r in runners), [r.stats.retries for r in runners]
    assert [r.stats.messages for r in runners] == [len(published)] * 2  # every batch committed exactly once
    assert dump_tables(isolated.dsn) == expected_dump(reference_db, published)


def test_postgres_unreachable_then_back_loses_nothing(isolated, reference_db):
    migrate(isolated.dsn)
    params = conninfo.conninfo_to_dict(isolated.dsn)
    proxy = TcpProxy((params.get("host") or "127.0.0.1", int(params.get("port") or 5432)))
    from dataclasses import replace

    through_proxy = replace(isolated.settings, postgres_dsn=conninfo.make_conninfo(
        isolated.dsn, host="127.0.0.1", port=str(proxy.port)))
    runner = ProjectionRunner("lineage", through_proxy, batch_size=100, backoff=Backoff(0.05, 0.3))
    thread = threading.Thread(target=runner.run)
    thread.start()  # PostgreSQL is unreachable from the start
    try:
        wait_for(lambda: runner.stats.retries >= 3, "retries while PostgreSQL is down", alive=thread)
        first = publish(isolated.settings, workload(200))
        proxy.up()
        wait_for(lambda: stored_offsets(isolated.dsn, "lineage") == published_ends(first), "first events", alive=thread)
        proxy.down()  # a restart: open connections drop, new ones are refused for a while
        retries = runner.stats.retries
        second = publish(isolated.settings, workload(300))
        wait_for(lambda: runner.stats.retries >= retries + 3, "retries while PostgreSQL is down again",
                 alive=thread)
        assert stored_offsets(isolated.dsn, "lineage") == published_ends(first)  # nothing moved past unprojected events
        proxy.up()
        wait_for(lambda: stored_offsets(isolated.dsn, "lineage") == published_ends(second), "every event", alive=thread)
    finally:
        runner.stop()
        thread.join(60)
        proxy.down()
    assert runner.stats.messages == len(first) + len(second)  # each batch committed once, none lost
    with psycopg.connect(reference_db) as conn:
        apply_directly(conn, "lineage", first + second)
    lineage_tables = ["lineage_history", "asset_edges"]
    assert dump_tables(isolated.dsn, lineage_tables) == dump_tables(reference_db, lineage_tables)


def consume_process(isolated, projection: str, *extra: str) -> subprocess.Popen:
    # A short session timeout: the restarted process must not wait long for the killed one to leave the group.
    env = isolated.env(ASSETLOG_KAFKA_SESSION_TIMEOUT_MS="6000")
    return subprocess.Popen([sys.executable, "-m", "assetlog", "consume", projection, "--json", "--quiet", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_consumer_killed_mid_stream_and_restarted_ends_identical(isolated, reference_db):
    migrate(isolated.dsn)
    published = publish(isolated.settings, workload(6000, keys=400))
    total = len(published)
    processes = {name: consume_process(isolated, name, "--batch-size", "200") for name in ("properties", "lineage")}
    try:
        for name, process in processes.items():
            wait_for(lambda name=name: sum(stored_offsets(isolated.dsn, name).values()) > total // 10,
                     f"{name} under way")
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            done = sum(stored_offsets(isolated.dsn, name).values())
            assert 0 < done < total, f"{name} was not killed mid-stream ({done} of {total})"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for name in processes:
        restarted = consume_process(isolated, name, "--until-caught-up")
        out, err = restarted.communicate(timeout=120)
        assert restarted.returncode == 0, err
        assert json.loads(out)["stopped_by"] == "caught-up"
        assert stored_offsets(isolated.dsn, name) == published_ends(published)
    for name in ("properties", "lineage"):  # the same events, never interrupted, into the reference database
        from dataclasses import replace

        uninterrupted = replace(isolated.settings, postgres_dsn=reference_db)
        assert run_until_caught_up(name, uninterrupted, group_id=f"{isolated.settings.topic_prefix}.ref.{name}"
                                   ).messages == total
    assert dump_tables(isolated.dsn) == dump_tables(reference_db)


def test_sigterm_commits_the_batch_in_hand_and_exits_cleanly(isolated):
    migrate(isolated.dsn)
    published = publish(isolated.settings, workload(3000))
    process = consume_process(isolated, "lineage", "--batch-size", "100")
    try:
        wait_for(lambda: sum(stored_offsets(isolated.dsn, "lineage").values()) > 0, "consumer under way")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    report = json.loads(out)
    assert report["stopped_by"] == "signal"
    committed = sum(stored_offsets(isolated.dsn, "lineage").values())
    assert report["messages"] == committed < len(published)  # stopped early, and every batch it took committed
    with psycopg.connect(isolated.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lineage_history").fetchone()[0] == committed
    assert run_until_caught_up("lineage", isolated.settings).messages == len(published) - committed


def test_an_error_in_the_commit_thread_is_raised_in_the_caller_and_moves_no_offset(isolated, monkeypatch):
    """A bug (not a server fault) must stop the consumer loudly, never pass silently. The bug is
    injected; the broker and the database are real."""
    migrate(isolated.dsn)
    publish(isolated.settings, workload(20))
    runner = ProjectionRunner("lineage", isolated.settings, until_caught_up=True)

    def broken(conn, effects):
        raise ZeroDivisionError("a bug in a projection")

    monkeypatch.setattr(runner.projection, "apply", broken)
    with pytest.raises(ZeroDivisionError, match="a bug in a projection"):
        runner.run()
    assert stored_offsets(isolated.dsn, "lineage") == {}
    assert runner.stats.messages == 0
