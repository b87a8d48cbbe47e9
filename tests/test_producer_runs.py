"""Task runs on the real broker: when events are emitted, what they carry, failures,
retries, async code and tasks outside flows."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from producer_support import read_published, run_and_read

import assetlog
from assetlog.producer import (
    Asset,
    AssetProperties,
    UpstreamTaskError,
    add_asset_metadata,
    flow,
    materialize,
    task,
)


def test_every_event_of_a_run_shares_time_run_and_producer_and_links_its_materialization(isolated):
    props = AssetProperties(name="Target", description="d", owners=["me"], url="https://t")

    @materialize("s3://e/src")
    def src() -> str:
        return "source-rows"

    @materialize(Asset(key="s3://e/target", properties=props), "s3://e/second", by="dbt",
                 asset_deps=["s3://e/explicit"])
    def target(rows: str) -> None:
        add_asset_metadata("s3://e/target", {"rows": 1})

    @flow
    def pipeline() -> None:
        target(src())

    before = datetime.now(UTC)
    out = run_and_read(isolated.settings, pipeline)
    after = datetime.now(UTC)
    events = [e for e in out.events if e.record["run"]["task_name"] == "target"]
    assert len(events) == 2 + 2 * 2 + 1
    assert len({e.record["event_time"] for e in events}) == 1
    assert before - timedelta(seconds=1) <= events[0].record["event_time"] <= after
    assert len({e.record["event_id"] for e in out.events}) == len(out.events)
    assert all(uuid.UUID(e.record["event_id"]).version == 7 for e in out.events)
    run = events[0].record["run"]
    assert run["flow_name"] == "pipeline" and uuid.UUID(run["flow_run_id"]) and uuid.UUID(run["task_run_id"])
    assert all(e.record["run"] == run for e in events)
    assert all(e.record["producer"] == {"host": socket.gethostname(), "pid": os.getpid(),
                                        "version": assetlog.__version__} for e in out.events)
    mats = {m["asset_key"]: m for m in out.materializations}
    assert mats["s3://e/target"]["properties"] == {"name": "Target", "description": "d", "owners": ["me"],
                                                    "url": "https://t"}
    assert mats["s3://e/second"]["properties"] is None
    assert mats["s3://e/target"]["by"] == "dbt" and mats["s3://e/src"]["by"] is None
    for dep in out.dependencies:
        assert dep["materialization_event_id"] == mats[dep["downstream_key"]]["event_id"]
        assert dep["status"] == "SUCCEEDED"


def test_kafka_keys_and_topics_follow_the_asset(isolated):
    @materialize("s3://k/a")
    def a() -> str:
        return "a-out"

    @materialize("s3://k/b")
    def b(x: str) -> None:
        add_asset_metadata("s3://k/b", {"n": 1})

    @flow
    def pipeline() -> None:
        for _ in range(3):
            b(a())

    out = run_and_read(isolated.settings, pipeline)
    topics = isolated.settings.topics
    for e in out.events:
        expected_topic = {"materialization": topics.materializations, "dependency": topics.dependencies,
                          "metadata": topics.metadata}[e.event_type]
        assert e.topic == expected_topic
        assert e.key == (e.record.get("asset_key") or e.record["downstream_key"])
    # One asset's events stay on one partition of each topic, in order.
    partitions = {(e.topic, e.key): set() for e in out.events}
    for e in out.events:
        partitions[(e.topic, e.key)].add(e.partition)
    assert all(len(p) == 1 for p in partitions.values())
    times = [e.record["event_time"] for e in out.events if e.event_type == "materialization" and e.key == "s3://k/b"]
    assert times == sorted(times) and len(times) == 3


def test_a_failed_task_emits_failed_events_with_the_error_then_raises(isolated):
    class LoadError(Exception):
        pass

    @materialize("s3://fail/up")
    def up() -> str:
        return "ok-data"

    @materialize("s3://fail/out", asset_deps=["s3://fail/ext"])
    def broken(x: str) -> None:
        raise LoadError("table locked by another writer")

    @flow
    def pipeline() -> None:
        broken(up())

    out = run_and_read(isolated.settings, pipeline)
    assert isinstance(out.error, LoadError)
    failed = out.materialization("s3://fail/out")
    assert failed["status"] == "FAILED"
    assert failed["error"] == {"type": "LoadError", "message": "table locked by another writer"}
    assert failed["upstream_keys"] == ["s3://fail/up", "s3://fail/ext"]
    assert {d["status"] for d in out.dependencies} == {"FAILED"}
    assert out.materialization("s3://fail/up")["error"] is None


def test_plain_tasks_emit_nothing(isolated):
    @task(asset_deps=["s3://plain/dep"])
    def plain() -> int:
        return 1

    @task
    def failing() -> None:
        raise ValueError("x")

    @flow
    def pipeline() -> None:
        plain()
        failing()

    out = run_and_read(isolated.settings, pipeline)
    assert isinstance(out.error, ValueError)
    assert out.events == []


def test_retries_emit_once_for_the_final_attempt(isolated):
    attempts = {"ok": 0, "never": 0}

    @materialize("s3://retry/eventually", retries=2, retry_delay_seconds=[0.01, 0.02])
    def eventually() -> str:
        attempts["ok"] += 1
        add_asset_metadata("s3://retry/eventually", {f"attempt{attempts['ok']}": True})
        if attempts["ok"] < 3:
            raise ConnectionError(f"attempt {attempts['ok']} failed")
        return "done"

    @materialize("s3://retry/never", retries=1, retry_delay_seconds=0)
    def never() -> None:
        attempts["never"] += 1
        raise TimeoutError(f"attempt {attempts['never']} timed out")

    @flow
    def pipeline() -> None:
        eventually()
        never()

    out = run_and_read(isolated.settings, pipeline)
    assert attempts == {"ok": 3, "never": 2}
    assert isinstance(out.error, TimeoutError)
    ok, bad = out.materialization("s3://retry/eventually"), out.materialization("s3://retry/never")
    assert ok["status"] == "SUCCEEDED" and ok["error"] is None
    # As in Prefect, each attempt has its own asset context: only the final attempt's metadata.
    assert [json.loads(m["metadata_json"]) for m in out.metadata] == [{"attempt3": True}]
    assert bad["status"] == "FAILED" and bad["error"] == {"type": "TimeoutError", "message": "attempt 2 timed out"}
    assert len(out.materializations) == 2


def test_async_tasks_and_flows(isolated):
    @materialize("s3://async/a")
    async def a() -> list[int]:
        await asyncio.sleep(0.01)
        return [1000, 2000]

    @materialize("s3://async/b", retries=1)
    async def b(rows: list[int], calls: list[int]) -> int:
        calls.append(1)
        add_asset_metadata("s3://async/b", {"rows": len(rows)})
        if len(calls) == 1:
            raise ValueError("first attempt")
        return sum(rows)

    @materialize("s3://async/c")
    async def c(value: int) -> int:
        return value + 1  # a new object: returning `value` itself would make c its producer

    @materialize("s3://async/d")
    def d(values: list[int]) -> None: ...

    @flow
    async def pipeline() -> int:
        rows = await a()
        total = await b(rows, [])
        gathered = await asyncio.gather(c(total), c(total))
        d(gathered)
        submitted = c.submit(total)
        return submitted.result()

    out = run_and_read(isolated.settings, pipeline)
    assert out.error is None and out.result == 3001
    assert out.upstream_of("s3://async/b") == ["s3://async/a"]
    assert [m["upstream_keys"] for m in out.materializations if m["asset_key"] == "s3://async/c"] == [
        ["s3://async/b"]] * 3
    assert out.upstream_of("s3://async/d") == ["s3://async/c"]
    assert out.metadata[0]["asset_key"] == "s3://async/b"


def test_decorated_functions_return_their_value_unchanged(isolated):
    payload = {"rows": [1, 2, 3]}

    @materialize("s3://v/x")
    def same() -> dict[str, list[int]]:
        return payload

    @flow
    def pipeline() -> dict[str, list[int]]:
        return same()

    out = run_and_read(isolated.settings, pipeline)
    assert out.result is payload


def test_a_task_outside_any_flow_emits_without_flow_run(isolated):
    @materialize("s3://solo/out", asset_deps=["s3://solo/in"])
    def solo() -> int:
        return 41

    def call() -> int:
        return solo() + solo() - 41

    out = run_and_read(isolated.settings, call)
    assert out.result == 41
    assert len(out.materializations) == 2
    assert all(m["run"]["flow_run_id"] is None and m["run"]["flow_name"] is None for m in out.materializations)
    assert all(m["upstream_keys"] == ["s3://solo/in"] for m in out.materializations)


def test_a_failed_upstream_future_stops_the_downstream_task_without_events(isolated):
    @materialize("s3://up/broken")
    def broken() -> int:
        raise OSError("no such bucket")

    @materialize("s3://up/downstream")
    def downstream(x: int) -> None: ...

    @flow
    def pipeline() -> None:
        downstream(broken.submit())

    out = run_and_read(isolated.settings, pipeline)
    assert isinstance(out.error, UpstreamTaskError)
    assert "broken" in str(out.error) and "no such bucket" in str(out.error)
    assert [m["asset_key"] for m in out.materializations] == ["s3://up/broken"]


def test_the_flow_waits_for_submitted_runs_it_did_not_resolve(isolated):
    @materialize("s3://bg/slow")
    def slow() -> None:
        import time

        time.sleep(0.2)

    @flow
    def pipeline() -> None:
        slow.submit()
        slow.submit()

    out = run_and_read(isolated.settings, pipeline)
    assert len(out.materializations) == 2


def test_keyboard_interrupt_is_not_a_failed_materialization(isolated):
    @materialize("s3://interrupt/x")
    def interrupted() -> None:
        raise KeyboardInterrupt

    @flow
    def pipeline() -> None:
        interrupted()

    with pytest.raises(KeyboardInterrupt):
        run_and_read(isolated.settings, pipeline)
    assert read_published(isolated.settings) == []
