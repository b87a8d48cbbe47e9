"""The OpenLineage -> Assetlog mapping, as pure functions: no broker, no database.

The events come from the official `openlineage-python` model (tests/openlineage_support.py).
"""

from __future__ import annotations

import gzip
import json

import pytest
from openlineage_support import PG, S3, pipeline, to_dict

from assetlog.config import Topics
from assetlog.integrations.openlineage.ingest import RunState, translate
from assetlog.integrations.openlineage.receiver import decode_body
from assetlog.integrations.openlineage.spec import InvalidOpenLineage, validate_event
from assetlog.producer.event_builders import ProducerIdentity
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA

TOPICS = Topics("t")
WHO = ProducerIdentity("host", 1, "0")


def run_all(events: list[dict]) -> dict[str, list]:
    """Translate events in order, keeping each run's state as the receiver does; events per run id."""
    states: dict[str, RunState] = {}
    out: dict[str, list] = {}
    for event in events:
        assert validate_event(event) == "RunEvent"
        run_id = event["run"]["runId"]
        result = translate(event, states.get(run_id, RunState()), TOPICS, WHO)
        states[run_id] = result.state
        out.setdefault(run_id, []).append(result.events)
    return out


def test_complete_materializes_every_output_with_the_inputs_of_all_the_runs_events() -> None:
    p = pipeline()
    complete = run_all([to_dict(e) for e in p.events])[p.load_run_id][2]
    [mat] = [e for e in complete if e.event_type == MATERIALIZATION]
    assert mat.key == p.daily_key and mat.record["status"] == "SUCCEEDED"
    assert mat.record["upstream_keys"] == [p.customers_key, p.orders_key]  # START's and RUNNING's inputs
    assert mat.record["properties"] == {"name": None, "description": "Daily revenue",
                                        "owners": ["team:finance", "alice"], "url": None}
    assert mat.record["run"]["flow_run_id"] == p.dag_run_id and mat.record["run"]["flow_name"] == "daily_dag"
    assert mat.record["run"]["task_run_id"] == p.load_run_id and mat.record["by"] == "spark"
    deps = [e for e in complete if e.event_type == DEPENDENCY]
    assert {(d.record["upstream_key"], d.record["declared"]) for d in deps} == {
        (p.customers_key, "EXPLICIT"), (p.orders_key, "EXPLICIT")}
    orders = next(d for d in deps if d.record["upstream_key"] == p.orders_key)
    assert orders.record["upstream_properties"]["description"] == "All orders"
    [meta] = [e for e in complete if e.event_type == METADATA]
    metadata = json.loads(meta.record["metadata_json"])
    assert metadata["outputStatistics"]["rowCount"] == 31
    assert metadata["schema"]["fields"][1]["name"] == "revenue"
    assert metadata["columnLineage"]["fields"]["revenue"]["inputFields"][0]["field"] == "amount"
    assert metadata["team"] == {"_producer": metadata["team"]["_producer"], "_schemaURL": metadata["team"]["_schemaURL"],
                                "team": "finance", "cost_center": 42}
    assert metadata["symlinks"]["identifiers"][0]["name"] == "reports.daily"
    assert metadata["openlineage"]["input_facets"][p.orders_key]["dataQualityMetrics"]["rowCount"] == 1000


def test_fail_and_abort_are_failed_materializations_told_apart_by_error_type() -> None:
    p = pipeline()
    runs = run_all([to_dict(e) for e in p.events])
    [failed] = [e for e in runs[p.failed_run_id][1] if e.event_type == MATERIALIZATION]
    assert failed.record["status"] == "FAILED"
    assert failed.record["error"] == {"type": "OpenLineageFail", "message": "division by zero"}
    [aborted] = [e for e in runs[p.aborted_run_id][1] if e.event_type == MATERIALIZATION]
    assert aborted.key == p.aborted_key and aborted.record["upstream_keys"] == [p.customers_key]
    assert aborted.record["error"]["type"] == "OpenLineageAbort"


def test_a_streaming_job_that_never_completes_records_its_edge_once() -> None:
    p = pipeline()
    first, second = run_all([to_dict(e) for e in p.events])[p.stream_run_id]
    assert [(e.event_type, e.record.get("upstream_key")) for e in first] == [
        (DEPENDENCY, p.topic_key), (METADATA, None)]
    assert second == []  # nothing new: no second history row for the same edge


def test_a_resent_event_gets_the_same_event_ids_and_another_event_other_ids() -> None:
    event = to_dict(pipeline().events[2])
    ids = [e.record["event_id"] for e in translate(event, RunState(), TOPICS, WHO).events]
    assert ids == [e.record["event_id"] for e in translate(event, RunState(), TOPICS, WHO).events]
    later = dict(event, eventTime="2026-03-01T12:30:00+00:00")
    assert not set(ids) & {e.record["event_id"] for e in translate(later, RunState(), TOPICS, WHO).events}


def test_spec_1_events_are_accepted() -> None:
    event = to_dict(pipeline().events[2])
    event["schemaURL"] = "https://openlineage.io/spec/1-0-5/OpenLineage.json#/definitions/RunEvent"
    assert validate_event(event) == "RunEvent"
    assert translate(event, RunState(), TOPICS, WHO).events


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda e: e.pop("eventTime"), "eventTime"),
    (lambda e: e["run"].update(runId="not-a-uuid"), "run.runId must be a UUID"),
    (lambda e: e["outputs"][0].update(name="x" * 600), "over Assetlog's limit"),
    (lambda e: e["outputs"][0]["facets"]["documentation"].update(description=5), "is not of type 'string'"),
    (lambda e: e["outputs"][0]["facets"]["ownership"].update(owners=[7]), "ownership"),
])
def test_invalid_events_are_refused_with_the_reason(mutate, reason: str) -> None:
    event = to_dict(pipeline().events[2])
    mutate(event)
    with pytest.raises(InvalidOpenLineage, match=reason):
        validate_event(event)
        translate(event, RunState(), TOPICS, WHO)


def test_dataset_and_job_events_validate_as_such() -> None:
    dataset_event = {"eventTime": "2026-03-01T12:00:00Z", "producer": "https://x", "schemaURL":
                     "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent",
                     "dataset": {"namespace": S3, "name": "a.csv"}}
    assert validate_event(dataset_event) == "DatasetEvent"
    job_event = {"eventTime": "2026-03-01T12:00:00Z", "producer": "https://x", "schemaURL":
                 "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent",
                 "job": {"namespace": "n", "name": "j"}, "inputs": [{"namespace": PG, "name": "a.b.c"}]}
    assert validate_event(job_event) == "JobEvent"


def test_bodies_over_the_limit_are_refused_even_gzipped() -> None:
    body = json.dumps({"pad": "x" * 5000}).encode()
    with pytest.raises(InvalidOpenLineage, match="size limit of 2048"):
        decode_body(body, False, 2048)
    with pytest.raises(InvalidOpenLineage, match="size limit of 2048"):
        decode_body(gzip.compress(body), True, 2048)
    with pytest.raises(InvalidOpenLineage, match="truncated"):
        decode_body(gzip.compress(body)[:40], True, 1 << 20)
    assert decode_body(gzip.compress(body), True, 1 << 20) == {"pad": "x" * 5000}


def test_a_symlink_of_type_assetlog_names_the_asset_and_other_symlinks_do_not() -> None:
    event = to_dict(pipeline().events[2])
    output = event["outputs"][0]
    assert translate(event, RunState(), TOPICS, WHO).events[0].key == "s3://lake/reports/daily.parquet"  # TABLE
    output["facets"]["symlinks"]["identifiers"].append(
        {"namespace": "postgres://prod-db", "name": "public.daily", "type": "ASSETLOG"})
    events = translate(event, RunState(), TOPICS, WHO).events
    assert {e.key for e in events} == {"postgres://prod-db/public/daily"}
    metadata = json.loads(next(e for e in events if e.event_type == METADATA).record["metadata_json"])
    assert (metadata["openlineage"]["namespace"], metadata["openlineage"]["name"]) == (S3, "reports/daily.parquet")


def test_a_job_event_records_its_declared_edges_once() -> None:
    from assetlog.integrations.openlineage.receiver import as_declaration_run

    job_event = {"eventTime": "2026-03-01T12:00:00Z", "producer": "https://x", "schemaURL":
                 "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent",
                 "job": {"namespace": "dbt", "name": "model.daily"},
                 "inputs": [{"namespace": PG, "name": "shop.public.orders"}],
                 "outputs": [{"namespace": S3, "name": "reports/daily.parquet"}]}
    assert validate_event(job_event) == "JobEvent"
    run = as_declaration_run(job_event)
    assert run["run"]["runId"] == as_declaration_run(job_event)["run"]["runId"]  # the same job, the same run
    first = translate(run, RunState(), TOPICS, WHO)
    deps = [e for e in first.events if e.event_type == DEPENDENCY]
    assert [(d.record["upstream_key"], d.key, d.record["declared"]) for d in deps] == [
        (f"{PG}/shop/public/orders", f"{S3}/reports/daily.parquet", "EXPLICIT")]
    later = dict(run, eventTime="2026-03-02T12:00:00Z")
    assert translate(later, first.state, TOPICS, WHO).events == []  # declared again: nothing new
