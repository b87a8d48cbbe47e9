"""OpenLineage events built with the official `openlineage-python` model, for the integration tests.

`pipeline()` is what an Airflow DAG run with a Spark job inside sends: a START
naming the inputs, a RUNNING adding an output, a COMPLETE with the facets
Assetlog maps (documentation, ownership, schema, outputStatistics, columnLineage,
dataQualityMetrics, symlinks, a custom facet), a FAIL with an errorMessage and an
ABORT; parent and root runs; and a streaming job that only ever sends RUNNING.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    BaseFacet,
    column_lineage_dataset,
    data_quality_metrics_input_dataset,
    documentation_dataset,
    error_message_run,
    ownership_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
    symlinks_dataset,
)
from openlineage.client.facet_v2 import output_statistics_output_dataset as output_statistics
from openlineage.client.serde import Serde

PRODUCER = "https://github.com/example/pipelines/v1"
PG = "postgres://db.example:5432"
S3 = "s3://lake"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@attr.define
class TeamFacet(BaseFacet):
    """A custom facet nobody has a schema for: kept as JSON."""

    team: str = attr.field(default="")
    cost_center: int = attr.field(default=0)


def to_dict(event: RunEvent) -> dict[str, Any]:
    return json.loads(Serde.to_json(event))


def _event(state: RunState, run_id: str, job: str, minutes: int, inputs=(), outputs=(), run_facets=None,
           parent: parent_run.ParentRunFacet | None = None) -> RunEvent:
    facets = dict(run_facets or {})
    if parent is not None:
        facets["parent"] = parent
    facets.setdefault("processing_engine", processing_engine_run.ProcessingEngineRunFacet(version="3.5.1",
                                                                                          name="spark"))
    return RunEvent(eventType=state, eventTime=(T0 + timedelta(minutes=minutes)).isoformat(),
                    run=Run(runId=run_id, facets=facets), job=Job(namespace="spark", name=job),
                    inputs=list(inputs), outputs=list(outputs), producer=PRODUCER)


@dataclass(frozen=True)
class Pipeline:
    events: list[RunEvent]
    dag_run_id: str
    load_run_id: str
    failed_run_id: str
    aborted_run_id: str
    stream_run_id: str
    orders_key: str = f"{PG}/shop/public/orders"
    customers_key: str = f"{PG}/shop/public/customers"
    daily_key: str = f"{S3}/reports/daily.parquet"
    broken_key: str = f"{S3}/reports/broken.parquet"
    aborted_key: str = f"{S3}/reports/aborted.parquet"
    topic_key: str = "kafka://broker:9092/clicks"
    sessions_key: str = f"{S3}/stream/sessions"


def pipeline() -> Pipeline:
    dag_run, load, failed, aborted, stream = (str(uuid.uuid4()) for _ in range(5))
    task_run = str(uuid.uuid4())
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=task_run), job=parent_run.Job(namespace="airflow", name="daily_dag.load_task"),
        root=parent_run.Root(run=parent_run.RootRun(runId=dag_run),
                             job=parent_run.RootJob(namespace="airflow", name="daily_dag")))
    orders = InputDataset(PG, "shop.public.orders", facets={
        "documentation": documentation_dataset.DocumentationDatasetFacet(description="All orders"),
        "schema": schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name="id", type="bigint"),
            schema_dataset.SchemaDatasetFacetFields(name="amount", type="numeric")]),
    }, inputFacets={"dataQualityMetrics": data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
        rowCount=1000, columnMetrics={"amount": data_quality_metrics_input_dataset.ColumnMetrics(nullCount=0)})})
    customers = InputDataset(PG, "shop.public.customers")
    daily = OutputDataset(S3, "reports/daily.parquet", facets={
        "documentation": documentation_dataset.DocumentationDatasetFacet(description="Daily revenue"),
        "ownership": ownership_dataset.OwnershipDatasetFacet(owners=[
            ownership_dataset.Owner(name="team:finance"), ownership_dataset.Owner(name="alice")]),
        "schema": schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name="day", type="date"),
            schema_dataset.SchemaDatasetFacetFields(name="revenue", type="double")]),
        "columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet(fields={
            "revenue": column_lineage_dataset.Fields(inputFields=[
                column_lineage_dataset.InputField(namespace=PG, name="shop.public.orders", field="amount")])}),
        "symlinks": symlinks_dataset.SymlinksDatasetFacet(identifiers=[
            symlinks_dataset.Identifier(namespace="hive://metastore", name="reports.daily", type="TABLE")]),
        "team": TeamFacet(team="finance", cost_center=42),
    }, outputFacets={"outputStatistics": output_statistics.OutputStatisticsOutputDatasetFacet(
        rowCount=31, size=2048)})
    boom = error_message_run.ErrorMessageRunFacet(message="division by zero", programmingLanguage="python")
    events = [
        _event(RunState.START, load, "daily_revenue", 0, inputs=[orders], parent=parent),
        _event(RunState.RUNNING, load, "daily_revenue", 1, inputs=[customers],
               outputs=[OutputDataset(S3, "reports/daily.parquet")], parent=parent),
        _event(RunState.COMPLETE, load, "daily_revenue", 2, outputs=[daily], parent=parent),
        _event(RunState.START, failed, "broken_report", 3, inputs=[customers]),
        _event(RunState.FAIL, failed, "broken_report", 4, outputs=[OutputDataset(S3, "reports/broken.parquet")],
               run_facets={"errorMessage": boom}),
        _event(RunState.START, aborted, "aborted_report", 5, inputs=[customers],
               outputs=[OutputDataset(S3, "reports/aborted.parquet")]),
        _event(RunState.ABORT, aborted, "aborted_report", 6),
        _event(RunState.RUNNING, stream, "sessionize", 7, inputs=[InputDataset("kafka://broker:9092", "clicks")],
               outputs=[OutputDataset(S3, "stream/sessions")]),
        _event(RunState.RUNNING, stream, "sessionize", 8, inputs=[InputDataset("kafka://broker:9092", "clicks")],
               outputs=[OutputDataset(S3, "stream/sessions")]),
    ]
    return Pipeline(events, dag_run, load, failed, aborted, stream)
