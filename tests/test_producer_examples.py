"""The assets guide's pipelines (examples/) run and publish what the guide says they mean."""

from __future__ import annotations

import ast
import json
from importlib import resources

from producer_support import run_and_read

from assetlog.examples import example_flows, run_all


def test_every_example_uses_only_the_public_producer_api():
    folder = resources.files("assetlog.examples")
    modules = [entry for entry in folder.iterdir() if entry.name.endswith(".py") and entry.name != "__init__.py"]
    assert len(modules) == len(example_flows()) == 6
    for module in modules:
        tree = ast.parse(module.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert imported <= {"assetlog.producer", "__future__"}, (module.name, imported)


def test_run_all_publishes_the_guides_lineage(isolated):
    out = run_and_read(isolated.settings, run_all)
    assert out.result == ["analytics-pipeline", "accumulating-metadata", "explicit-dependencies-flow",
                          "mixed-dependencies", "external-database-flow", "properties-overwrite"]
    mats = out.materializations

    # Two described assets: their properties travel with their materializations.
    described = {m["asset_key"]: m["properties"] for m in mats if m["run"]["flow_name"] == "analytics-pipeline"}
    assert described["s3://my-bucket/processed-data.csv"]["name"] == "Processed Customer Data"
    assert described["snowflake://warehouse/analytics/sales_summary"]["owners"] == ["analytics-team",
                                                                                    "john.doe@company.com"]

    # Accumulated metadata: one event per asset and run, merged.
    merged = [json.loads(m["metadata_json"]) for m in out.metadata if m["run"]["task_name"] == "comprehensive_processing"]
    assert merged == [{"raw_records": 20, "cleaned_records": 15, "records_removed": 5, "final_records": 15,
                       "enrichment_success_rate": 0.92}]
    utility = [json.loads(m["metadata_json"]) for m in out.metadata if m["run"]["task_name"] == "process_data"]
    assert utility == [{"rows_processed": 15, "processing_time": "2.5s"}]

    edges = out.edges()
    assert {("s3://my-bucket/raw-data.csv", "s3://my-bucket/processed-data.csv", "EXPLICIT"),
            ("s3://my-bucket/processing-config.json", "s3://my-bucket/processed-data.csv", "EXPLICIT"),
            ("s3://my-bucket/data-from-other-workflow.csv", "s3://my-bucket/final-report.csv", "EXPLICIT"),
            ("s3://my-bucket/upstream.csv", "s3://my-bucket/downstream.csv", "INFERRED"),
            ("s3://my-bucket/config.json", "s3://my-bucket/downstream.csv", "EXPLICIT"),
            ("postgres://prod-db/public/users", "s3://my-bucket/user-analytics.csv", "EXPLICIT")} == edges

    external = [d for d in out.dependencies if d["upstream_key"] == "postgres://prod-db/public/users"]
    assert external[0]["upstream_properties"]["name"] == "Production Users Table"
    assert all(d["upstream_properties"] is None for d in out.dependencies if d is not external[0])

    evolving = sorted((m for m in mats if m["asset_key"] == "s3://my-bucket/evolving-data.csv"),
                      key=lambda m: m["event_time"])
    assert [m["properties"]["description"] for m in evolving] == ["Initial description",
                                                                  "Updated description with new insights"]
    assert evolving[0]["properties"]["url"] == "https://dashboard.company.com/evolving-data"
    assert evolving[1]["properties"]["url"] is None
    assert evolving[0]["event_time"] < evolving[1]["event_time"]
