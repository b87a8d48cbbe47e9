"""The bridge's mapping from Prefect's final states and assets, on real Prefect objects."""

from __future__ import annotations

import prefect.states as prefect_states  # the `prefect` extra is part of `test`
import pytest
from prefect.assets import Asset as PrefectAsset
from prefect.assets import AssetProperties as PrefectProperties

from assetlog.integrations.prefect.mapping import error_of, finished_run, status_of
from assetlog.producer.event_builders import derived_event_id


@pytest.mark.parametrize(("state", "status"), [
    (prefect_states.Completed(), "SUCCEEDED"),
    (prefect_states.Failed(), "FAILED"),
    (prefect_states.Completed(name="Cached"), None),  # Prefect emits no asset event for a cached run
    (prefect_states.Crashed(), None),
    (prefect_states.Cancelled(), None),
    (prefect_states.AwaitingRetry(), None),
    (prefect_states.Running(), None),
])
def test_only_the_final_states_prefect_emits_asset_events_for_are_published(state, status):
    assert status_of(state) == status


def test_a_failed_states_exception_becomes_the_error():
    assert error_of(prefect_states.Failed(data=ValueError("no header"))) == ("ValueError", "no header")
    assert error_of(prefect_states.Failed(message="worker lost")) == ("FailedRun", "worker lost")  # what Prefect raises for it


def test_explicit_wins_over_inferred_and_ids_derive_from_prefects_event_id():
    out = PrefectAsset(key="s3://b/out", properties=PrefectProperties(name="Out", owners=["a"]))
    both = PrefectAsset(key="s3://b/both")
    run = finished_run(
        downstream={out}, inferred={both, PrefectAsset(key="s3://b/in")}, explicit={both},
        declared_assets=[out], declared_deps=[both], materialization_metadata={"s3://b/out": {"rows": 2}},
        by="dbt", status="SUCCEEDED", error=None, event_time=1, task_run_id="t", task_name="n",
        task_version=None, flow_run_id=None, flow_name=None, seeds={"s3://b/out": "prefect-event-id"})
    assert [(u.asset.key, u.declared) for u in run.upstream] == [("s3://b/in", "INFERRED"),
                                                                ("s3://b/both", "EXPLICIT")]
    assert run.assets[0].properties is not None and run.assets[0].properties.owners == ["a"]
    assert run.metadata == {"s3://b/out": '{"rows":2}'}
    assert run.event_ids is not None and run.event_ids[0] == derived_event_id("prefect-event-id")
    assert len(run.event_ids) == 4  # materialization, two dependencies, metadata


def test_metadata_that_is_not_json_loses_only_its_own_event(caplog):
    from assetlog.integrations.prefect.mapping import metadata_of

    assert metadata_of({"s3://b/a": {"rows": 1}, "s3://b/c": {"when": object()}, "s3://b/d": {}}) == {
        "s3://b/a": '{"rows":1}'}
    assert "the metadata of s3://b/c is not published" in caplog.text
