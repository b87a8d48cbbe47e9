"""A deployment served by `prefect worker start --type process` against `prefect server start`
(both real, on 127.0.0.1) delivers its asset events through the bridge, with ids derived from
the ids the server stored for Prefect's own events. Slow (a server, a worker, several CLI
calls on a busy machine): `pytest -m slow tests/test_prefect_deployment.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prefect_support import BIN, prefect_server_fixture, stored_asset_events  # noqa: F401 (a fixture)
from producer_support import read_published

from assetlog.producer.event_builders import derived_event_id

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FLOWS = '''
from prefect import flow
from prefect.assets import Asset, AssetProperties, materialize


@materialize(Asset(key="s3://deployed/raw.csv", properties=AssetProperties(name="Raw")))
def extract() -> list[int]:
    return [1, 2, 3]


@materialize("s3://deployed/clean.csv", asset_deps=["postgres://db/ref"], by="pandas")
def clean(rows: list[int]) -> int:
    return len(rows)


@flow(name="deployed-flow")
def deployed_flow() -> None:
    clean(extract())
'''
DEPLOY = '''
import sys
from prefect import flow
flow.from_source(source=sys.argv[1], entrypoint="flows.py:deployed_flow").deploy(
    name="bridge-test", work_pool_name="test-pool", print_next_steps=False)
'''


def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout + done.stderr


def test_a_deployment_run_by_a_process_worker_delivers_through_the_bridge(prefect_server, isolated, tmp_path):
    url, env = prefect_server
    project = tmp_path / "project"
    project.mkdir()
    (project / "flows.py").write_text(FLOWS)
    (project / "deploy.py").write_text(DEPLOY)
    run([str(BIN / "prefect"), "work-pool", "create", "test-pool", "--type", "process"], env, project)
    run([sys.executable, "deploy.py", str(project)], env, project)
    run([str(BIN / "prefect"), "deployment", "run", "deployed-flow/bridge-test"], env, project)
    worker_env = isolated.env(**{k: v for k, v in env.items() if k.startswith("PREFECT_")},
                              PREFECT_PLUGINS_ENABLED="true")
    log = run([str(BIN / "prefect"), "worker", "start", "--pool", "test-pool", "--run-once"], worker_env, project)
    assert "Finished in state Completed" in log, log[-3000:]

    published = read_published(isolated.settings, at_least=4)
    materializations = {m.key: m.record for m in published if m.event_type == "materialization"}
    assert set(materializations) == {"s3://deployed/raw.csv", "s3://deployed/clean.csv"}
    assert {r["run"]["flow_name"] for r in materializations.values()} == {"deployed-flow"}
    assert materializations["s3://deployed/clean.csv"]["by"] == "pandas"
    assert materializations["s3://deployed/raw.csv"]["properties"]["name"] == "Raw"
    declared = {(m.record["upstream_key"], m.record["declared"]) for m in published if m.event_type == "dependency"}
    assert declared == {("s3://deployed/raw.csv", "INFERRED"), ("postgres://db/ref", "EXPLICIT")}

    # The server stored Prefect's own events: each Assetlog materialization id derives from one.
    stored = stored_asset_events(url, "prefect.asset.materialization.", at_least=len(materializations))
    prefect_ids = {e["resource"]["prefect.resource.id"]: e["id"] for e in stored}
    assert {key: derived_event_id(prefect_ids[key]) for key in materializations} == {
        key: record["event_id"] for key, record in materializations.items()}
