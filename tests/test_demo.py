"""`assetlog demo`, the README's first command, runs the whole data flow on the real stack."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_the_examples_and_prints_what_was_built(isolated):
    result = subprocess.run([sys.executable, "-m", "assetlog", "demo", "--json"], env=isolated.env(),
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    built = json.loads(result.stdout)
    assert len(built["flows"]) == 6
    assets = {asset["key"]: asset for asset in built["assets"]}
    sales = assets["snowflake://warehouse/analytics/sales_summary"]
    assert sales["properties"]["owners"] == ["analytics-team", "john.doe@company.com"]
    assert sales["last_materialization"]["status"] == "SUCCEEDED"
    # The external database asset got its properties through asset_deps, and was never materialized.
    users = assets["postgres://prod-db/public/users"]
    assert users["properties"]["name"] == "Production Users Table"
    assert users["last_materialization"] is None
    # The properties overwrite left the newest description.
    assert assets["s3://my-bucket/evolving-data.csv"]["properties"]["description"] == (
        "Updated description with new insights")
    edges = {(e["upstream"], e["downstream"]): e["declared"] for e in built["edges"]}
    assert edges[("s3://my-bucket/upstream.csv", "s3://my-bucket/downstream.csv")] == "inferred"
    assert edges[("s3://my-bucket/config.json", "s3://my-bucket/downstream.csv")] == "explicit"
    assert edges[("postgres://prod-db/public/users", "s3://my-bucket/user-analytics.csv")] == "explicit"
    assert built["consumers"]["properties"]["messages"] == built["consumers"]["lineage"]["messages"] > 0


def test_demo_human_output_lists_assets_and_edges(isolated):
    result = subprocess.run([sys.executable, "-m", "assetlog", "demo"], env=isolated.env(),
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    assert "ASSETS (13)" in result.stdout
    assert "LINEAGE EDGES (6)" in result.stdout
    assert "s3://my-bucket/upstream.csv  ->  s3://my-bucket/downstream.csv   (inferred)" in result.stdout
