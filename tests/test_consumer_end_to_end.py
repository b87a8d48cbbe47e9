"""Both consumers on the real broker and database: the rows, redeliveries, restarts, several processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest
from events_factory import (
    DASHBOARD,
    DASHBOARD_V2,
    GOLD,
    TaskRun,
    apply_directly,
    dump_tables,
    events_of,
    guide_pipelines,
    publish,
    published_ends,
    rows_by_key,
)
from psycopg import sql

from assetlog.consumers import ProjectionRunner, run_until_caught_up
from assetlog.projections import PROJECTION_TABLES, migrate


@pytest.fixture
def world(isolated):
    migrate(isolated.dsn)
    return isolated


def expected_tables(stack, isolated, published) -> dict:
    """The tables a direct, single-batch projection of the published events gives (no Kafka)."""
    name = f"{isolated.database}_expected"
    with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        from conftest import dsn_for_database

        dsn = dsn_for_database(stack.admin_dsn, name)
        migrate(dsn)
        with psycopg.connect(dsn) as conn:
            apply_directly(conn, "properties", published)
            apply_directly(conn, "lineage", published)
        return dump_tables(dsn)
    finally:
        with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def stored_offsets(dsn: str, projection: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(dsn) as conn:
        return {(t, p): o for t, p, o in conn.execute(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE projection = %s", (projection,))}


def test_guide_pipelines_through_kafka_give_the_expected_rows(stack, world):
    published = publish(world.settings, events_of(guide_pipelines()))
    for name in ("properties", "lineage"):
        stats = run_until_caught_up(name, world.settings)
        assert (stats.messages, stats.events, stats.dead_letters, stats.stopped_by) == (23, 23, 0, "caught-up")
        assert stored_offsets(world.dsn, name) == published_ends(published)
    assert dump_tables(world.dsn) == expected_tables(stack, world, published)
    assert rows_by_key(world.dsn, "asset_properties")[DASHBOARD]["url"] is None
    assert rows_by_key(world.dsn, "asset_properties")[DASHBOARD]["name"] == DASHBOARD_V2["name"]
    assert rows_by_key(world.dsn, "assets")[GOLD]["last_status"] == "FAILED"
    with psycopg.connect(world.dsn) as conn:
        positions = conn.execute("SELECT kafka_topic, kafka_partition, kafka_offset FROM lineage_history").fetchall()
    assert sorted(positions) == sorted((p.topic, p.partition, p.offset) for _t, _r, p in published)


def test_redelivered_events_change_nothing(world):
    events = events_of(guide_pipelines())
    publish(world.settings, events)
    for name in ("properties", "lineage"):
        run_until_caught_up(name, world.settings)
    before = dump_tables(world.dsn)
    republished = publish(world.settings, events[::-1])  # a producer resending: same event ids, new offsets
    for name in ("properties", "lineage"):
        assert run_until_caught_up(name, world.settings).messages == len(events)
        assert stored_offsets(world.dsn, name) == published_ends(republished)
    assert dump_tables(world.dsn) == before


def test_the_cli_resumes_where_it_stopped(world):
    publish(world.settings, events_of(guide_pipelines()))
    command = [sys.executable, "-m", "assetlog", "consume", "lineage", "--until-caught-up", "--json"]
    first = subprocess.run(command, env=world.env(), capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["messages"], report["stopped_by"], report["group"]) == (
        23, "caught-up", f"{world.settings.topic_prefix}.lineage")
    more = publish(world.settings, TaskRun(["s3://bucket/late.csv"], ["s3://bucket/early.csv"]).events())
    second = subprocess.run(command, env=world.env(), capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["messages"] == len(more) == 2
    with psycopg.connect(world.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lineage_history").fetchone()[0] == 25


def test_the_two_consumers_keep_independent_offsets(world):
    publish(world.settings, events_of(guide_pipelines()))
    run_until_caught_up("properties", world.settings)
    assert stored_offsets(world.dsn, "lineage") == {}
    with psycopg.connect(world.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lineage_history").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM assets").fetchone()[0] == 10
    assert run_until_caught_up("lineage", world.settings).messages == 23


@pytest.mark.parametrize("projection", ["properties", "lineage"])
def test_several_processes_share_the_partitions_and_project_each_event_once(stack, world, projection):
    runners = [ProjectionRunner(projection, world.settings, batch_size=50) for _ in range(2)]
    threads = [threading.Thread(target=r.run) for r in runners]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(r.assignment for r in runners)
                 and len({tp for r in runners for tp in r.assignment}) == 9, "both processes hold partitions")
        # Overlapping keys across partitions: both processes upsert the same assets rows concurrently.
        runs = [TaskRun([f"s3://bucket/t{i % 40}.csv"], [f"s3://bucket/t{(i + 1) % 40}.csv"],
                        metadata={f"s3://bucket/t{i % 40}.csv": {"i": i}}) for i in range(300)]
        published = publish(world.settings, events_of(runs))
        wait_for(lambda: stored_offsets(world.dsn, projection) == published_ends(published), "every event projected")
    finally:
        for runner in runners:
            runner.stop()
        for thread in threads:
            thread.join(30)
    assert all(r.stats.stopped_by == "signal" for r in runners)
    assert all(r.stats.messages > 0 for r in runners), [r.stats.messages for r in runners]
    assert sum(r.stats.messages for r in runners) == len(published)  # each message projected once
    tables = list(PROJECTION_TABLES[projection])
    expected = expected_tables(stack, world, published)
    assert dump_tables(world.dsn, tables) == {name: expected[name] for name in tables}


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.1)


def test_group_names_follow_the_topic_prefix(world):
    runner = ProjectionRunner("properties", world.settings)
    assert runner.group_id == f"{world.settings.topic_prefix}.properties"
    assert ProjectionRunner("lineage", world.settings, group_id=f"g-{uuid.uuid4()}").group_id.startswith("g-")


def test_missing_topics_are_named_with_the_fix(world):
    env = world.env(ASSETLOG_TOPIC_PREFIX=f"absent.{uuid.uuid4().hex[:8]}")
    result = subprocess.run([sys.executable, "-m", "assetlog", "consume", "properties", "--until-caught-up"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "topics missing" in result.stderr and "run `assetlog topics create` first" in result.stderr
    assert "Traceback" not in result.stderr
