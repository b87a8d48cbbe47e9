"""Runtime metadata on the real broker: merged, per asset, kept on failure, and both errors."""

from __future__ import annotations

import json

import pytest
from producer_support import run_and_read

from assetlog.producer import Asset, add_asset_metadata, flow, materialize, task

ASSET = Asset(key="s3://meta/customers.csv")


def test_metadata_is_shallow_merged_later_keys_win(isolated):
    @materialize(ASSET)
    def build() -> None:
        ASSET.add_metadata({"rows": 10, "stats": {"nulls": 1, "dupes": 2}, "stage": "raw"})
        add_asset_metadata(ASSET, {"rows": 8, "stats": {"nulls": 0}})
        add_asset_metadata("s3://meta/customers.csv", {"quality": 0.95})

    @flow
    def pipeline() -> None:
        build()

    out = run_and_read(isolated.settings, pipeline)
    [event] = out.metadata
    assert json.loads(event["metadata_json"]) == {"rows": 8, "stats": {"nulls": 0}, "stage": "raw", "quality": 0.95}
    assert event["asset_key"] == ASSET.key
    assert event["materialization_event_id"] == out.materialization(ASSET.key)["event_id"]
    assert event["status"] == "SUCCEEDED"


def test_metadata_is_kept_separately_for_each_asset_of_a_task(isolated):
    @materialize("s3://meta/a", "s3://meta/b", "s3://meta/c")
    def build() -> None:
        add_asset_metadata("s3://meta/a", {"rows": 1})
        add_asset_metadata("s3://meta/b", {"rows": 2, "extra": True})

    @flow
    def pipeline() -> None:
        build()

    out = run_and_read(isolated.settings, pipeline)
    by_key = {m["asset_key"]: json.loads(m["metadata_json"]) for m in out.metadata}
    assert by_key == {"s3://meta/a": {"rows": 1}, "s3://meta/b": {"rows": 2, "extra": True}}
    for m in out.metadata:
        assert m["materialization_event_id"] == out.materialization(m["asset_key"])["event_id"]


def test_metadata_is_per_task_run(isolated):
    @materialize(ASSET)
    def build(n: int) -> None:
        ASSET.add_metadata({f"run{n}": n})

    @flow
    def pipeline() -> None:
        build(1001)
        build(1002)

    out = run_and_read(isolated.settings, pipeline)
    assert sorted(m["metadata_json"] for m in out.metadata) == ['{"run1001":1001}', '{"run1002":1002}']
    assert len({m["materialization_event_id"] for m in out.metadata}) == 2


def test_metadata_is_kept_when_the_task_fails(isolated):
    @materialize(ASSET)
    def build() -> None:
        ASSET.add_metadata({"rows_read": 120})
        raise RuntimeError("disk full")

    @flow
    def pipeline() -> None:
        build()

    out = run_and_read(isolated.settings, pipeline)
    assert isinstance(out.error, RuntimeError)
    [event] = out.metadata
    assert json.loads(event["metadata_json"]) == {"rows_read": 120}
    assert event["status"] == "FAILED"


def test_values_are_recorded_as_they_were_when_added(isolated):
    @materialize(ASSET)
    def build() -> None:
        columns = ["a"]
        ASSET.add_metadata({"columns": columns, "text": "ünïcödé ✓"})
        columns.append("mutated-later")

    @flow
    def pipeline() -> None:
        build()

    out = run_and_read(isolated.settings, pipeline)
    assert json.loads(out.metadata[0]["metadata_json"]) == {"columns": ["a"], "text": "ünïcödé ✓"}


def test_no_metadata_event_without_metadata(isolated):
    @materialize(ASSET)
    def build() -> None:
        ASSET.add_metadata({})

    @flow
    def pipeline() -> None:
        build()

    out = run_and_read(isolated.settings, pipeline)
    assert out.metadata == [] and len(out.materializations) == 1


def test_outside_any_task_is_a_runtime_error_with_prefects_text():
    with pytest.raises(RuntimeError) as info:
        add_asset_metadata(ASSET, {"a": 1})
    assert str(info.value) == "Unable to call `add_asset_metadata` when not inside of an AssetContext"
    with pytest.raises(RuntimeError) as info:
        ASSET.add_metadata({"a": 1})
    assert str(info.value) == "Unable add Asset metadata when not inside of an AssetContext"

    @flow
    def in_flow_body() -> None:
        ASSET.add_metadata({"a": 1})

    with pytest.raises(RuntimeError):
        in_flow_body()


def test_in_a_plain_task_or_for_another_asset_is_a_value_error(isolated):
    message = "Can only add metadata to assets that are arguments to @materialize"

    @task
    def plain() -> None:
        add_asset_metadata(ASSET, {"a": 1})

    @materialize("s3://meta/other")
    def other() -> None:
        ASSET.add_metadata({"a": 1})

    @flow
    def with_plain() -> None:
        plain()

    @flow
    def with_other() -> None:
        other()

    with pytest.raises(ValueError) as info:
        with_plain()
    assert str(info.value) == message
    out = run_and_read(isolated.settings, with_other)
    assert isinstance(out.error, ValueError) and str(out.error) == message
    # The misuse fails the task like any exception: a FAILED materialization, no metadata.
    assert out.materialization("s3://meta/other")["status"] == "FAILED"
    assert out.metadata == []


def test_values_must_be_json_and_the_error_names_the_key(isolated):
    errors: list[Exception] = []

    @materialize(ASSET)
    def build() -> None:
        for bad in ({"when": object()}, {"ratio": {"x": object()}}, {1: "x"}, ["not", "a", "dict"]):
            try:
                ASSET.add_metadata(bad)  # type: ignore[arg-type]
            except TypeError as exc:
                errors.append(exc)
        ASSET.add_metadata({"ok": 1})

    @flow
    def pipeline() -> None:
        build()

    out = run_and_read(isolated.settings, pipeline)
    assert "'when'" in str(errors[0]) and "JSON" in str(errors[0])
    assert "'ratio'" in str(errors[1])  # also when the bad value is nested
    assert "1" in str(errors[2]) and len(errors) == 4
    assert json.loads(out.metadata[0]["metadata_json"]) == {"ok": 1}
