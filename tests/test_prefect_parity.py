"""Assetlog's built-in runtime against real Prefect, scenario by scenario.

Each scenario of `parity_scenarios.py` runs under Prefect (from PyPI, the `test`
extra; in a subprocess with a temporary PREFECT_HOME, see `prefect_parity_runner.py`)
and under `assetlog.producer` against the real broker; the asset materializations
(key, status, upstreams, metadata, properties) and what the scenario saw (return
values, states, error types, hooks) must be the same.

Prefect emits one event per distinct `Asset` declaration of a run, so a key declared
twice (once with properties) gives two events of one run; they are merged per run
and key before comparing, which is also what any store of them ends up holding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from parity_scenarios import SCENARIOS
from producer_support import Outcome, run_and_read

from assetlog import producer

RUNNER = Path(__file__).resolve().parent / "prefect_parity_runner.py"


@pytest.fixture(scope="module")
def under_prefect(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every scenario's events and notes under real Prefect (one subprocess for all)."""
    import prefect  # noqa: F401  (a missing Prefect is an error here, never a skip)

    home = tmp_path_factory.mktemp("prefect-home")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    out, err = home / "stdout", home / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        # Prefect starts its temporary local API as a child process: give the run its own process
        # group and end that group afterwards, so nothing it started outlives the test.
        proc = subprocess.Popen([sys.executable, str(RUNNER), *SCENARIOS], env=env, stdout=stdout,
                                stderr=stderr, start_new_session=True)
        try:
            proc.wait(timeout=400)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for line in out.read_text().splitlines():
        if line.startswith("PARITY-RESULTS "):
            return json.loads(line.removeprefix("PARITY-RESULTS "))  # type: ignore[no-any-return]
    raise AssertionError(f"the Prefect run gave no results (exit {proc.returncode}):\n{err.read_text()[-4000:]}")


def merged(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (run, key, status): upstreams united, properties united (a declaration
    without properties changes none), in a stable order, without the run ids."""
    runs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in events:
        slot = (str(event["run"]), event["key"], event["status"])
        known = runs.get(slot)
        if known is None:
            runs[slot] = {**event, "upstreams": sorted(event["upstreams"])}
            continue
        known["upstreams"] = sorted(set(known["upstreams"]) | set(event["upstreams"]))
        if event["properties"] is not None:
            known["properties"] = {**(known["properties"] or {}), **event["properties"]}
        known["metadata"] = known["metadata"] or event["metadata"]
    entries = [{k: v for k, v in entry.items() if k != "run"} for entry in runs.values()]
    return sorted(entries, key=lambda e: json.dumps(e, sort_keys=True))


def assetlog_events(out: Outcome) -> list[dict[str, Any]]:
    """The materializations Assetlog published, in the runner's normalized shape."""
    metadata = {m["materialization_event_id"]: json.loads(m["metadata_json"]) for m in out.metadata}
    events = []
    for m in out.materializations:
        properties = m["properties"]
        events.append({
            "run": m["run"]["task_run_id"],
            "key": m["asset_key"],
            "status": m["status"],
            "upstreams": list(m["upstream_keys"]),
            "metadata": metadata.get(m["event_id"]),
            # Only the fields that are set, as Prefect's resource labels; a record whose fields are
            # all null would clear stored properties, so it is kept apart from "no properties".
            "properties": None if properties is None else {k: v for k, v in properties.items() if v is not None},
        })
    return events


def plain(value: object) -> object:
    return json.loads(json.dumps(value, default=repr))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_assetlog_gives_what_prefect_gives(name: str, under_prefect: dict[str, Any], isolated: Any) -> None:
    api = SimpleNamespace(flow=producer.flow, task=producer.task, materialize=producer.materialize,
                          Asset=producer.Asset, AssetProperties=producer.AssetProperties,
                          add_asset_metadata=producer.add_asset_metadata, notes=[])
    out = run_and_read(isolated.settings, SCENARIOS[name], api)
    prefect = under_prefect[name]
    error = None if out.error is None else f"{type(out.error).__name__}: {out.error}"
    assert (error, plain(api.notes)) == (prefect["error"], prefect["notes"])
    assert merged(assetlog_events(out)) == merged(prefect["events"])
