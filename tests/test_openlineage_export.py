"""`assetlog export openlineage`: events from `assetlog.producer`, exported to Assetlog's own receiver
under another topic prefix, project to the same tables (ids and times aside); every exported event
validates against the spec; a target that is down is retried, and offsets wait for it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Isolated, create_isolated, drop_isolated
from openlineage_receiver_support import migrate, project, receiver, wait_until

from assetlog.integrations.openlineage.spec import validate_event
from assetlog.producer import Asset, AssetProperties, add_asset_metadata, flow, materialize, publishing, task

RAW = Asset(key="s3://lake/raw/orders.csv", properties=AssetProperties(name="Raw orders", url="https://lake/raw"))
USERS = Asset(key="postgres://db:5432/app/public/users",
              properties=AssetProperties(description="App users", owners=["platform"]))
CLEAN = "s3://lake/clean/orders.parquet"
REPORT = Asset(key="s3://lake/reports/odd name.csv".replace(" ", "_"),
               properties=AssetProperties(name="Report", description="Weekly", owners=["finance", "bob"]))
BROKEN = "s3://lake/reports/broken.csv"


def produce_pipeline(world: Isolated) -> None:
    @materialize(RAW)
    def extract() -> list[str]:
        return ["order-1"]

    @materialize(CLEAN, asset_deps=[USERS], by="dbt")
    def clean(rows: list[str]) -> list[str]:
        add_asset_metadata(CLEAN, {"rows": len(rows), "nulls": None, "nested": {"a": [1, 2]}})
        return list(rows)

    @materialize(REPORT, "s3://lake/reports/copy.csv")
    def report(rows: list[str]) -> None:
        return None

    @materialize(BROKEN, retries=0)
    def broken(rows: list[str]) -> None:
        raise ValueError("negative revenue")

    @task
    def plain() -> None:
        return None

    @flow
    def weekly() -> None:
        rows = clean(extract())
        report(rows)
        plain()
        _swallow(broken, rows)

    with publishing(world.settings):
        weekly()


def _swallow(fn, *args) -> None:
    try:
        fn(*args)
    except ValueError:
        pass


def comparable_tables(dsn: str) -> dict[str, list[Any]]:
    """The projected tables without what differs by design: ids, times, Kafka positions, producer."""
    volatile = {"event_id", "event_time", "materialization_event_id", "producer", "topic", "partition", "offset",
                "first_seen", "last_seen", "last_event_id", "last_materialization_event_id", "last_materialized_at",
                "metadata_time", "metadata_event_id", "metadata_materialization_event_id", "kafka_topic",
                "kafka_partition", "kafka_offset", "recorded_at"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in volatile}
        return value

    out = {}
    with psycopg.connect(dsn) as conn:
        for table in ("asset_properties", "assets", "asset_edges", "lineage_history"):
            rows = conn.execute(f"SELECT row_to_json(t) FROM {table} t").fetchall()
            out[table] = sorted(json.dumps(strip(r[0]), sort_keys=True) for r in rows)
    return out


@pytest.fixture
def second_world(stack, tmp_path) -> Iterator[Isolated]:
    world = create_isolated(stack, tmp_path / "outbox-b")
    try:
        yield world
    finally:
        drop_isolated(stack, world)


def export(world: Isolated, *target: str, timeout: float = 120) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-m", "assetlog", "export", "openlineage", *target,
                           "--until-caught-up", "--json"], env=world.env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_a_round_trip_through_the_receiver_gives_the_same_tables(isolated, second_world, tmp_path):
    migrate(isolated)
    migrate(second_world)
    produce_pipeline(isolated)
    project(isolated)
    events_file = tmp_path / "events.jsonl"
    file_stats = export(isolated, "--to-file", str(events_file), "--group", "to-file")
    lines = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert file_stats["exported"] == len(lines) == 5  # one per materialization (report writes two)
    for event in lines:
        assert validate_event(event) == "RunEvent"
    assert sorted(e["eventType"] for e in lines) == ["COMPLETE"] * 4 + ["FAIL"]

    with receiver(second_world) as (url, _process):
        stats = export(isolated, "--to", url)
    assert stats["exported"] == 5 and stats["retries"] == 0
    project(second_world)
    original, copied = comparable_tables(isolated.dsn), comparable_tables(second_world.dsn)
    assert len(original["lineage_history"]) == 11 and len(original["asset_edges"]) == 5
    assert any('"nulls": null, "rows": 1' in row for row in original["assets"])  # a null survives too
    assert copied == original


def test_a_target_that_is_down_is_retried_and_nothing_is_committed_meanwhile(isolated, second_world):
    migrate(second_world)
    produce_pipeline(isolated)
    unused = "http://127.0.0.1:9"  # discard port: nothing listens
    process = subprocess.Popen([sys.executable, "-m", "assetlog", "export", "openlineage", "--to", unused,
                                "--json"], env=isolated.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(2)]
        assert "retrying in" in lines[1], lines
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
    assert json.loads(out)["exported"] == 0
    with receiver(second_world) as (url, _process):  # the same group resumes from the start: nothing skipped
        assert export(isolated, "--to", url)["exported"] == 5


def test_a_round_trip_through_kafka_gives_the_same_tables(isolated, second_world):
    from confluent_kafka.admin import NewTopic

    from assetlog.topics import admin_client

    migrate(isolated)
    migrate(second_world)
    produce_pipeline(isolated)
    project(isolated)
    topic = f"{second_world.settings.topic_prefix}.openlineage"
    admin = admin_client(isolated.settings)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=-1)])[topic].result()
    assert export(isolated, "--to-kafka", topic)["exported"] == 5
    reader = subprocess.Popen([sys.executable, "-m", "assetlog", "ingest", "openlineage", "--from-kafka", topic,
                               "--json"], env=second_world.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        original = comparable_tables(isolated.dsn)

        def same() -> bool:
            project(second_world)
            return comparable_tables(second_world.dsn) == original

        wait_until(same, timeout=90, interval=1.0)
    finally:
        reader.terminate()
        out, err = reader.communicate(timeout=60)
    assert json.loads(out)["accepted"] == 5 and json.loads(out)["dead_lettered"] == 0, err


def test_openlineage_events_received_then_exported_to_another_assetlog_give_the_same_tables(isolated,
                                                                                          second_world):
    """OpenLineage -> Assetlog -> OpenLineage -> Assetlog: failures, aborts, and the streaming job's
    edges (dependencies of no materialization, exported as RUNNING events) survive."""
    import httpx2 as httpx
    from openlineage_support import pipeline, to_dict

    migrate(isolated)
    migrate(second_world)
    with receiver(isolated) as (url, _process):
        for event in pipeline().events:
            response = httpx.post(f"{url}/api/v1/lineage", json=to_dict(event))
            assert response.status_code == 201, response.text
    project(isolated)
    with receiver(second_world) as (url, _process):
        stats = export(isolated, "--to", url)
    assert stats["exported"] == 6  # 3 materializations; edges of the RUNNING, the aborted START, the stream
    project(second_world)
    original = comparable_tables(isolated.dsn)
    assert any("kafka://broker:9092/clicks" in row for row in original["asset_edges"])
    assert comparable_tables(second_world.dsn) == original
