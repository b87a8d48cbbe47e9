"""`assetlog ingest prefect`: a Prefect server's stored asset events become Assetlog's, once each.

The mapping test uses events shaped exactly as a real `prefect server start` (3.9.1) returned
them from `/api/events/filter`; the drill (slow) runs real flows against a real server and
stops and restarts the follower, with and without the bridge also on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prefect_support import prefect_server_fixture, stored_asset_events  # noqa: F401 (a fixture)
from producer_support import read_published

from assetlog.consumers import run_until_caught_up
from assetlog.errors import AssetlogError
from assetlog.integrations.prefect.follower import Checkpoint, FollowerGap, check_retention, run_from_event
from assetlog.producer.event_builders import derived_event_id
from assetlog.projections import migrate

RUN = [{"prefect.resource.id": "prefect.flow-run.0edf149b-0fcf-44e4-8d99-64daacf72da9",
        "prefect.resource.role": "flow-run", "prefect.resource.name": "swinging-sunfish"},
       {"prefect.resource.id": "prefect.task-run.01a21813-b944-7b03-8e62-7188a923b6c4",
        "prefect.resource.role": "task-run", "prefect.resource.name": "clean-21f"},
       {"prefect.resource.id": "prefect.flow.c4b06cce-3910-436b-bdff-d955409cc886",
        "prefect.resource.role": "flow", "prefect.resource.name": "deployed-flow"}]
REFERENCED = {"id": "01a21813-b971-73a0-84dc-d81320ed60c6", "event": "prefect.asset.referenced",
              "occurred": "2026-11-26T13:37:55.551000Z",
              "resource": {"prefect.resource.id": "s3://deployed/raw.csv", "prefect.resource.name": "Raw"},
              "related": RUN, "payload": {}}
MATERIALIZED = {"id": "01a21813-b971-79ee-a901-2b3a29b3178b", "event": "prefect.asset.materialization.failed",
                "occurred": "2026-11-26T13:37:55.552000Z",
                "resource": {"prefect.resource.id": "s3://deployed/clean.csv",
                             "prefect.asset.owners": '["data-team"]'},
                "related": [{"prefect.resource.id": "postgres://db/ref", "prefect.resource.role": "asset"},
                            {"prefect.resource.id": "s3://deployed/raw.csv", "prefect.resource.role": "asset"},
                            {"prefect.resource.id": "pandas", "prefect.resource.role": "asset-materialized-by"},
                            *RUN],
                "payload": {"rows": 3}}


def test_a_materialization_event_maps_like_the_bridge_with_what_prefects_events_carry():
    from assetlog.integrations.prefect.follower import asset_from_resource

    run = run_from_event(MATERIALIZED, {"01a21813-b944-7b03-8e62-7188a923b6c4": {
        "s3://deployed/raw.csv": asset_from_resource(REFERENCED["resource"])}})
    assert run is not None
    assert [a.key for a in run.assets] == ["s3://deployed/clean.csv"]
    assert run.assets[0].properties is not None and run.assets[0].properties.owners == ["data-team"]
    assert (run.status, run.error, run.by) == ("FAILED", None, "pandas")  # Prefect's events carry no error
    assert [(u.asset.key, u.declared, u.properties_record() and u.properties_record()["name"]) for u in run.upstream] == [
        ("postgres://db/ref", "INFERRED", None), ("s3://deployed/raw.csv", "INFERRED", "Raw")]
    assert run.metadata == {"s3://deployed/clean.csv": '{"rows":3}'}
    assert run.run_record() == {"flow_run_id": "0edf149b-0fcf-44e4-8d99-64daacf72da9", "flow_name": "deployed-flow",
                                "task_run_id": "01a21813-b944-7b03-8e62-7188a923b6c4", "task_name": "clean"}
    assert run.event_ids is not None and run.event_ids[0] == derived_event_id(MATERIALIZED["id"])
    assert run_from_event(REFERENCED, {}) is None


def test_a_checkpoint_older_than_the_servers_retention_is_reported_not_skipped():
    now = datetime(2026, 11, 26, tzinfo=UTC)
    old = Checkpoint(occurred="2026-11-01T00:00:00Z", ids_at_occurred=["x"])
    with pytest.raises(FollowerGap, match="older than the Prefect server's event retention"):
        check_retention(old, timedelta(days=7), now)
    check_retention(Checkpoint(occurred="2026-11-25T00:00:00Z"), timedelta(days=7), now)
    check_retention(Checkpoint(), timedelta(days=7), now)


def test_a_damaged_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "checkpoint.json"
    path.write_text("{not json")
    with pytest.raises(AssetlogError, match="checkpoint .*: cannot read it"):
        Checkpoint.load(path)


FLOW = '''
import sys
from prefect import flow
from prefect.assets import Asset, AssetProperties, materialize

round_ = sys.argv[1]


@materialize(Asset(key=f"s3://followed/{round_}/raw.csv", properties=AssetProperties(name="Raw")))
def extract() -> list[int]:
    return [1, 2, 3]


@materialize(f"s3://followed/{round_}/clean.csv", asset_deps=["postgres://db/ref"], by="pandas")
def clean(rows: list[int]) -> int:
    return len(rows)


@flow(name="followed-flow")
def followed_flow() -> None:
    clean(extract())


followed_flow()
'''


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_follower_drill_stop_run_restart_every_event_once_even_with_the_bridge_on(prefect_server, isolated, tmp_path):
    url, env = prefect_server
    script = tmp_path / "flow.py"
    script.write_text(FLOW)
    checkpoint = tmp_path / "checkpoint.json"
    follower_env = isolated.env(PREFECT_API_URL=url)
    follow_cmd = [sys.executable, "-m", "assetlog", "ingest", "prefect", "--checkpoint", str(checkpoint),
                  "--settle", "0"]

    def run_flow(round_: str, bridge: bool) -> None:
        flow_env = isolated.env(**env, PREFECT_PLUGINS_ENABLED="true" if bridge else "false")
        done = subprocess.run([sys.executable, str(script), round_], env=flow_env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    def materializations_on_topics() -> Counter:
        return Counter(m.record["event_id"] for m in read_published(isolated.settings)
                       if m.event_type == "materialization")

    # 1. The follower runs (polling) while a flow runs, then is stopped.
    follower = subprocess.Popen([*follow_cmd, "--interval", "1"], env=follower_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_flow("one", bridge=False)
        stored_asset_events(url, "prefect.asset.materialization.", at_least=2)
        deadline = time.monotonic() + 90
        while len(materializations_on_topics()) < 2 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err[-3000:]
    assert len(materializations_on_topics()) == 2

    # 2. Flows run while it is stopped (one with the bridge also on); the restart catches up.
    run_flow("two", bridge=False)
    run_flow("three", bridge=True)
    stored = stored_asset_events(url, "prefect.asset.materialization.", at_least=6)
    done = subprocess.run([*follow_cmd, "--once", "--json"], env=follower_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["published"] == 4

    # Every Prefect materialization is on the topics under the id derived from Prefect's id:
    # once from the follower, and for round three a second time, same id, from the bridge.
    on_topics = materializations_on_topics()
    expected = {derived_event_id(e["id"]) for e in stored}
    assert set(on_topics) == expected and len(expected) == 6
    bridged = {derived_event_id(e["id"]) for e in stored if "/three/" in e["resource"]["prefect.resource.id"]}
    assert {i: n for i, n in on_topics.items() if n > 1} == dict.fromkeys(bridged, 2)

    # A third pass finds nothing new: the checkpoint neither loses nor repeats.
    again = subprocess.run([*follow_cmd, "--once", "--json"], env=follower_env, capture_output=True, text=True,
                           timeout=300)
    assert json.loads(again.stdout)["published"] == 0

    # The consumers count each materialization once.
    migrate(isolated.dsn)
    for name in ("properties", "lineage"):
        run_until_caught_up(name, isolated.settings)
    with psycopg.connect(isolated.dsn) as conn:
        count = conn.execute("SELECT count(*) FROM lineage_history WHERE event_type = 'materialization'").fetchone()
    assert count is not None and count[0] == 6


def test_a_gap_older_than_retention_fails_with_one_line(tmp_path, isolated):
    checkpoint = tmp_path / "checkpoint.json"
    Checkpoint(occurred="2020-01-01T00:00:00Z", ids_at_occurred=["x"]).save(checkpoint)
    env = isolated.env(PREFECT_API_URL="http://127.0.0.1:9/api")
    done = subprocess.run([sys.executable, "-m", "assetlog", "ingest", "prefect", "--once",
                           "--checkpoint", str(checkpoint)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "older than the Prefect server's event retention" in done.stderr
    assert "Traceback" not in done.stderr
    assert os.path.exists(checkpoint)


def test_following_survives_an_unreachable_api_and_retries(tmp_path, caplog):
    from assetlog.integrations.prefect.follower import Follower, PrefectEvents

    polls = iter([False, False, True])
    follower = Follower(PrefectEvents("http://127.0.0.1:9/api", timeout=2), publisher=None,
                        checkpoint_path=tmp_path / "checkpoint.json")
    follower.follow(0.01, timedelta(0), lambda: next(polls))  # no exception: two failed polls, then stop
    assert caplog.text.count("Connection refused") == 2
    assert not (tmp_path / "checkpoint.json").exists()
