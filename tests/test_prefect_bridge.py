"""Real Prefect (from PyPI) with the bridge plugin on feeds Assetlog unchanged.

The guide's six pipelines run under Prefect in a subprocess (`PREFECT_PLUGINS_ENABLED=true`,
a fresh `PREFECT_HOME`, no Prefect server of ours: Prefect starts its own temporary one),
and through `assetlog.producer` in this process, each into its own world on the real
broker; the real consumers project both, and per asset the projections must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import create_isolated, drop_isolated
from events_factory import WHOLE_EVENT
from psycopg.rows import dict_row

from assetlog.consumers import run_until_caught_up
from assetlog.examples import run_all
from assetlog.producer import publishing
from assetlog.projections import migrate

pytestmark = pytest.mark.timeout(600)  # Prefect's import and temporary server are slow on a busy machine
HERE = Path(__file__).parent
TEST_KEYS = "s3://prefect-bridge-test/"  # assets of the subprocess's own extra flows


def prefect_env(world: Any, prefect_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in world.env().items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(prefect_home), "PREFECT_PLUGINS_ENABLED": "true",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                # Prefect's temporary server migrates a fresh database first: slow on a busy machine.
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}, **extra)
    return env


def project(world: Any) -> None:
    migrate(world.dsn)
    for name in ("properties", "lineage"):
        stats = run_until_caught_up(name, world.settings)
        assert stats.dead_letters == 0


@pytest.fixture(scope="module")
def worlds(stack, tmp_path_factory):
    """(built-in world, Prefect world, the subprocess's result, its log), each pipeline run once."""
    base = tmp_path_factory.mktemp("prefect-bridge")
    builtin = create_isolated(stack, base / "builtin-outbox")
    bridged = create_isolated(stack, base / "prefect-outbox")
    try:
        with publishing(builtin.settings):
            run_all()
        (base / "a-file").write_text("")
        result_path = base / "result.json"
        completed = subprocess.run(
            [sys.executable, str(HERE / "prefect_pipelines.py"), str(result_path), str(base / "a-file" / "outbox")],
            env=prefect_env(bridged, base / "prefect-home"), capture_output=True, text=True, timeout=420)
        log = completed.stdout + completed.stderr
        assert completed.returncode == 0, log[-4000:]
        project(builtin)
        project(bridged)
        yield builtin, bridged, json.loads(result_path.read_text()), log
    finally:
        drop_isolated(stack, builtin)
        drop_isolated(stack, bridged)


def projected(dsn: str) -> dict[str, Any]:
    """Per asset, what the projections say, without ids and times (they differ between runs)."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        assets = {r["key"]: (r["last_status"], r["last_materialized_by"], r["last_error_type"],
                             r["last_error_message"], r["metadata"])
                  for r in conn.execute("SELECT * FROM assets")}
        properties = {r["key"]: (r["name"], r["description"], r["owners"], r["url"])
                      for r in conn.execute("SELECT * FROM asset_properties")}
        edges = {(r["upstream_key"], r["downstream_key"], r["declared"])
                 for r in conn.execute("SELECT * FROM asset_edges")}
        history = Counter()
        for r in conn.execute("SELECT * FROM lineage_history"):
            payload = r["payload"]
            history[json.dumps({
                "type": r["event_type"], "asset": r["asset_key"], "upstream": r["upstream_key"],
                "status": r["status"], "flow": r["flow_name"], "task": r["task_name"],
                "by": payload.get("by"), "properties": payload.get("properties"),
                "upstream_keys": sorted(payload.get("upstream_keys") or []),
                "declared": payload.get("declared"), "upstream_properties": payload.get("upstream_properties"),
                "metadata": payload.get("metadata_json"), "error": payload.get("error"),
            }, sort_keys=True)] += 1
    return {"assets": assets, "properties": properties, "edges": edges, "history": history}


def without_test_keys(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "assets": {k: v for k, v in view["assets"].items() if not k.startswith(TEST_KEYS)},
        "properties": {k: v for k, v in view["properties"].items() if not k.startswith(TEST_KEYS)},
        "edges": {e for e in view["edges"] if not e[1].startswith(TEST_KEYS)},
        "history": Counter({k: n for k, n in view["history"].items()
                            if not json.loads(k)["asset"].startswith(TEST_KEYS)}),
    }


def test_the_guides_pipelines_under_real_prefect_project_like_the_builtin_runtime(worlds):
    builtin, bridged, result, _log = worlds
    assert result["bridge_installed"] is True
    assert result["flows"] == ["COMPLETED"] * 6
    assert result["flow_names"] == ["analytics-pipeline", "accumulating-metadata", "explicit-dependencies-flow",
                                    "mixed-dependencies", "external-database-flow", "properties-overwrite"]
    expected = projected(builtin.dsn)
    actual = without_test_keys(projected(bridged.dsn))
    assert len(expected["assets"]) >= 10 and len(expected["history"]) >= 20  # the comparison has substance
    for part in ("assets", "properties", "edges", "history"):
        assert actual[part] == expected[part], part


def test_a_failed_materialization_carries_the_error(worlds):
    _builtin, bridged, result, _log = worlds
    assert result["failing"]["state"] == "FAILED"
    view = projected(bridged.dsn)
    key = TEST_KEYS + "failing.csv"
    assert view["assets"][key] == ("FAILED", "pandas", "ValueError", "the input has no header row", None)
    assert (TEST_KEYS + "input.csv", key, "explicit") in view["edges"]
    failed = [json.loads(k) for k in view["history"] if json.loads(k)["asset"] == key]
    assert {(f["type"], f["status"], f["flow"], f["task"]) for f in failed} == {
        ("materialization", "FAILED", "failing-flow", "failing_task"),
        ("dependency", "FAILED", "failing-flow", "failing_task")}


def test_a_bridge_error_never_fails_the_task(worlds):
    _builtin, bridged, result, log = worlds
    # The publisher cannot create its outbox (its parent is a file): the task and flow still complete.
    assert result["broken_outbox"] == {"state": "COMPLETED", "result": 42}
    assert "Assetlog bridge: the lineage events of task run" in log
    # ... and the log says why: the publisher names the outbox it cannot use.
    assert "outbox" in log.split("Assetlog bridge: the lineage events of task run", 1)[1][:3000]
    assert TEST_KEYS + "unpublished.csv" not in projected(bridged.dsn)["assets"]


def test_events_published_just_before_the_process_ends_are_delivered_at_exit(worlds):
    _builtin, bridged, _result, _log = worlds
    assert projected(bridged.dsn)["assets"][TEST_KEYS + "at-exit.csv"][0] == "SUCCEEDED"


def test_prefects_own_asset_events_are_unchanged_by_the_bridge(worlds):
    _builtin, bridged, result, _log = worlds
    assert Counter(e["event"] for e in result["prefect_events_on"]) == {
        "prefect.asset.materialization.succeeded": 2, "prefect.asset.referenced": 3}
    assert result["prefect_events_on"] == result["prefect_events_off"]


def test_upstreams_keep_inferred_or_explicit_and_their_properties_as_in_the_builtin_runtime(worlds):
    _builtin, bridged, _result, _log = worlds
    with psycopg.connect(bridged.dsn) as conn:
        rows = conn.execute("SELECT upstream_key, payload FROM lineage_history WHERE event_type = 'dependency' "
                            "AND asset_key = %s", (TEST_KEYS + "out.csv",)).fetchall()
    dependencies = {key: (p["declared"], (p["upstream_properties"] or {}).get("name"),
                          (p["upstream_properties"] or {}).get("owners")) for key, p in rows}
    assert dependencies == {
        TEST_KEYS + "raw": ("INFERRED", None, None),  # materialized upstream: its properties came with it
        TEST_KEYS + "ext": ("INFERRED", "Ext", None),  # from a plain task's asset_deps: carries them
        TEST_KEYS + "table": ("EXPLICIT", None, ["x"]),
    }


def test_event_ids_derive_from_prefects_event_ids(worlds):
    """Each materialization's id is the uuid5 of the id Prefect gave its own event: the
    follower of a Prefect server derives the same and the consumers count it once."""
    _builtin, bridged, _result, _log = worlds
    with psycopg.connect(bridged.dsn) as conn:
        rows = conn.execute(  # each row's whole event (its columns and its lean payload, migration 0009)
            f"SELECT event_id, {WHOLE_EVENT} FROM lineage_history WHERE event_type = 'materialization'").fetchall()
    assert rows
    for event_id, event in rows:
        assert str(event_id)[14] == "5", event_id  # a version 5 (name-based) UUID
        assert event["event_id"] == str(event_id)


@pytest.mark.parametrize(("setting", "installed"), [
    ({}, True),
    ({"PREFECT_PLUGINS_SAFE_MODE": "true"}, False),
    ({"PREFECT_PLUGINS_DENY": "assetlog"}, False),
    ({"PREFECT_PLUGINS_ALLOW": "some-other-plugin"}, False),
])
def test_prefects_plugin_settings_decide_whether_the_bridge_is_on(tmp_path, setting, installed):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ASSETLOG_"))}
    env.update({"PREFECT_HOME": str(tmp_path), "PREFECT_PLUGINS_ENABLED": "true"}, **setting)
    code = ("import prefect\nfrom assetlog.integrations.prefect.bridge import installed\n"
            "print('installed' if installed() else 'off')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == ("installed" if installed else "off")


def test_events_left_undelivered_at_exit_are_reported_and_kept_in_the_outbox(tmp_path):
    from assetlog.producer.outbox import Outbox

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ASSETLOG_"))}
    env.update({"PREFECT_HOME": str(tmp_path / "home"), "PREFECT_PLUGINS_ENABLED": "true",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
                "ASSETLOG_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # nothing listens there
                "ASSETLOG_OUTBOX_DIR": str(tmp_path / "outbox"), "ASSETLOG_FLUSH_TIMEOUT_SECONDS": "2"})
    code = ("from prefect import flow\nfrom prefect.assets import materialize\n"
            "@materialize('s3://b/kept.csv')\ndef t():\n    pass\n"
            "@flow\ndef f():\n    t()\nf()\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Assetlog bridge: 1 lineage events wait in the outbox" in out.stderr + out.stdout
    outbox = Outbox(tmp_path / "outbox", create=False)
    try:
        assert outbox.pending_events() == 1
    finally:
        outbox.close()
