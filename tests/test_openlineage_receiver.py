"""The OpenLineage receiver end to end: the official `openlineage-python` client, configured only by
its own settings file, sends a pipeline to `assetlog ingest openlineage`; the real consumers project it."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx2 as httpx
import pytest
from openlineage.client import OpenLineageClient
from openlineage_receiver_support import migrate, project, receiver, wait_until, write_client_config
from openlineage_support import PG, pipeline, to_dict

from assetlog.producer import Asset, flow, materialize, publishing
from assetlog.query.store import LineageStore

API_KEY = "s3cret-token"


def test_the_official_http_client_feeds_assets_edges_properties_and_metadata(isolated, tmp_path, monkeypatch):
    migrate(isolated)
    p = pipeline()
    with receiver(isolated, "--api-key-env", "OL_KEY", OL_KEY=API_KEY) as (url, process):
        config = write_client_config(tmp_path / "openlineage.yml", (
            f"  type: http\n  url: {url}\n  compression: gzip\n"
            f"  auth:\n    type: api_key\n    apiKey: {API_KEY}\n"))
        monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
        client = OpenLineageClient()
        for event in p.events:
            client.emit(event)
        client.emit(p.events[2])  # a client retry: the same event again
        assert httpx.post(f"{url}/api/v1/lineage", json={}).status_code == 401  # no key, no entry
        process.terminate()
        stats = json.loads(process.communicate(timeout=60)[0])
    assert stats["accepted"] == len(p.events) + 1 and stats["outbox_waiting"] == 0

    # The same datasets, named by Assetlog's own producer: one asset each.
    @materialize(Asset(key=p.daily_key), asset_deps=[p.orders_key])
    def rebuild() -> None:
        return None

    @flow
    def nightly() -> None:
        rebuild()

    with publishing(isolated.settings):
        nightly()
    project(isolated)

    with LineageStore(isolated.dsn) as store:
        daily = store.asset(p.daily_key)
        assert daily.properties is not None and daily.properties.description == "Daily revenue"
        assert daily.properties.owners == ["team:finance", "alice"]
        assert {n.key for n in daily.upstream} == {p.orders_key, p.customers_key}
        assert daily.last_materialization is not None and daily.last_materialization.task_name == "rebuild"
        orders = store.asset(p.orders_key)
        assert orders.properties is not None and orders.properties.description == "All orders"
        broken = store.asset(p.broken_key).last_materialization
        assert broken is not None and broken.status == "FAILED"
        assert (broken.error_type, broken.error_message) == ("OpenLineageFail", "division by zero")
        aborted = store.asset(p.aborted_key).last_materialization
        assert aborted is not None and aborted.error_type == "OpenLineageAbort"
        sessions = store.asset(p.sessions_key)  # a streaming job that never completed
        assert [n.key for n in sessions.upstream] == [p.topic_key] and sessions.last_materialization is None
        assert sessions.metadata is not None and sessions.metadata.metadata["openlineage"]["event_type"] == "RUNNING"
    runs = _materializations(isolated, p.daily_key)  # one from OpenLineage (the resent one added none), one ours
    assert sorted(r["task_name"] for r in runs) == ["daily_revenue", "rebuild"]
    ol_run = [r for r in runs if r["task_name"] == "daily_revenue"]
    assert len(ol_run) == 1 and ol_run[0]["flow_run_id"] == p.dag_run_id and ol_run[0]["flow_name"] == "daily_dag"
    metadata = ol_run[0]["metadata"]
    assert metadata["outputStatistics"]["rowCount"] == 31 and "columnLineage" in metadata
    assert metadata["team"]["cost_center"] == 42

    done = subprocess.run([sys.executable, "-m", "assetlog", "lineage", p.daily_key, "--upstream", "--json"],
                          env=isolated.env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    keys = {n["key"] for n in json.loads(done.stdout)["nodes"]}
    assert keys == {p.daily_key, p.orders_key, p.customers_key}
    assert p.orders_key == f"{PG}/shop/public/orders"


def _materializations(world, key: str) -> list[dict]:
    """Materializations of `key` in lineage_history, with the metadata event of each."""
    import psycopg

    with psycopg.connect(world.dsn) as conn:
        rows = conn.execute(
            "SELECT h.task_name, h.flow_run_id::text, h.flow_name, m.payload -> 'metadata' "
            "FROM lineage_history h LEFT JOIN lineage_history m ON m.materialization_event_id = h.event_id "
            "AND m.event_type = 'metadata' WHERE h.event_type = 'materialization' AND h.asset_key = %s", (key,),
        ).fetchall()
    return [{"task_name": r[0], "flow_run_id": r[1], "flow_name": r[2], "metadata": r[3]} for r in rows]


DATASET_EVENT = json.dumps({
    "eventTime": "2026-03-01T12:00:00Z", "producer": "https://example.com/p",
    "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent",
    "dataset": {"namespace": "s3://lake", "name": "a.csv"}}).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "not valid JSON"), (b'{"eventTime": 1}', "none of 'run', 'job', 'dataset'"),
    (b"[]", "JSON object"), (DATASET_EVENT, "DatasetEvent is not accepted"),
])
def test_bad_bodies_get_400_with_a_reason(isolated, body, reason):
    with receiver(isolated) as (url, _process):
        response = httpx.post(f"{url}/api/v1/lineage", content=body,
                              headers={"content-type": "application/json"})
    assert response.status_code == 400 and reason in response.json()["error"]


def test_the_official_kafka_client_feeds_the_reader_and_bad_records_are_dead_lettered(isolated, tmp_path,
                                                                                      monkeypatch):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import NewTopic

    from assetlog.topics import admin_client

    migrate(isolated)
    p = pipeline()
    topic = f"{isolated.settings.topic_prefix}.openlineage"
    admin = admin_client(isolated.settings)
    for future in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=-1)]).values():
        future.result()
    config = write_client_config(tmp_path / "openlineage.yml", (
        f"  type: kafka\n  topic: {topic}\n  flush: true\n"
        f"  config:\n    bootstrap.servers: {isolated.settings.kafka_bootstrap}\n    acks: all\n"))
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    client = OpenLineageClient()
    for event in p.events[:3]:
        client.emit(event)
    raw = Producer({"bootstrap.servers": isolated.settings.kafka_bootstrap})
    raw.produce(topic, key=p.load_run_id, value=b'{"eventType": "COMPLETE"')  # truncated JSON
    raw.flush(30)
    for event in p.events[3:]:
        client.emit(event)

    process = subprocess.Popen([sys.executable, "-m", "assetlog", "ingest", "openlineage", "--from-kafka", topic,
                                "--json"], env=isolated.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        dlq = Consumer({"bootstrap.servers": isolated.settings.kafka_bootstrap, "group.id": "t",
                        "auto.offset.reset": "earliest"})
        dlq.subscribe([f"{topic}.dlq"])
        letter = None
        for _ in range(120):
            letter = dlq.poll(0.5)
            if letter is not None and letter.error() is None:
                break
        dlq.close()
        assert letter is not None and letter.error() is None, "nothing dead-lettered"
        headers = dict(letter.headers())
        assert b"not valid JSON" in headers["assetlog.error.detail"]
        assert letter.value() == b'{"eventType": "COMPLETE"'
        wait_until(lambda: _projected_count(isolated) >= 2, timeout=60)  # the pipeline's last run arrived too
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
    stats = json.loads(out)
    assert stats["accepted"] == len(p.events) and stats["dead_lettered"] == 1, err
    project(isolated)
    with LineageStore(isolated.dsn) as store:
        assert {n.key for n in store.asset(p.daily_key).upstream} == {p.orders_key, p.customers_key}
        assert store.asset(p.broken_key).last_materialization.status == "FAILED"


def _projected_count(world) -> int:
    """Project what arrived so far; how many assets have the streaming job's edge or a FAILED status."""
    import psycopg

    project(world)
    with psycopg.connect(world.dsn) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM asset_edges WHERE upstream_key LIKE 'kafka://%%') "
                            "+ (SELECT count(*) FROM assets WHERE last_status = 'FAILED' AND key LIKE "
                            "'%%aborted%%')").fetchone()[0]


def test_a_201_means_durable_even_if_kafka_is_down_and_the_receiver_is_killed(isolated):
    import signal

    from assetlog.config import ENV_KAFKA_BOOTSTRAP

    migrate(isolated)
    p = pipeline()
    body = json.dumps(to_dict(p.events[7])).encode()  # the streaming job's first RUNNING event
    with receiver(isolated, **{ENV_KAFKA_BOOTSTRAP: "127.0.0.1:1"}) as (url, process):  # no broker there
        response = httpx.post(f"{url}/api/v1/lineage", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 201, response.text
        process.send_signal(signal.SIGKILL)  # no chance to send anything: only the outbox has it
    done = subprocess.run([sys.executable, "-m", "assetlog", "outbox", "flush", "--json"], env=isolated.env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["delivered"] == 2, done.stderr
    project(isolated)
    with LineageStore(isolated.dsn) as store:
        assert [n.key for n in store.asset(p.sessions_key).upstream] == [p.topic_key]


@pytest.mark.parametrize("args", [
    ["ingest", "openlineage", "--listen", "127.0.0.1:0", "--api-key-env", "OL_KEY_NOT_SET"],
    ["ingest", "openlineage", "--listen", "127.0.0.1:0", "--max-event-bytes", "10"],
    ["ingest", "openlineage", "--listen", "127.0.0.1:0"],  # neither tokens nor an explicit --no-auth
    ["ingest", "openlineage", "--listen", "127.0.0.1:0", "--no-auth", "--require-token"],
    ["ingest", "openlineage", "--from-kafka", "t", "--no-auth"],
    ["export", "openlineage", "--to", "ftp://x"],
])
def test_operator_errors_are_one_line_and_non_zero(isolated, args):
    done = subprocess.run([sys.executable, "-m", "assetlog", *args], env=isolated.env(), capture_output=True,
                          text=True, timeout=60)
    # "assetlog: ..." for operator errors, "assetlog ingest openlineage: error: ..." for usage errors (exit 2)
    assert done.returncode != 0 and done.stderr.startswith("assetlog") and len(done.stderr.splitlines()) == 1


def test_a_job_event_is_accepted_as_declared_edges_without_metadata(isolated):
    job_event = {"eventTime": "2026-03-01T12:00:00Z", "producer": "https://example.com/p",
                 "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent",
                 "job": {"namespace": "dbt", "name": "model.daily"},
                 "inputs": [{"namespace": PG, "name": "shop.public.orders"}],
                 "outputs": [{"namespace": "s3://lake", "name": "reports/daily.parquet", "facets": {
                     "documentation": {"_producer": "https://example.com/p", "_schemaURL": "https://x/y",
                                       "description": "declared"}}}]}
    with receiver(isolated) as (url, _process):
        first = httpx.post(f"{url}/api/v1/lineage", json=job_event)
        again = httpx.post(f"{url}/api/v1/lineage", json=dict(job_event, eventTime="2026-03-02T12:00:00Z"))
    assert first.status_code == 201 and first.json()["assetlog_events"] == 1  # the edge; no metadata event
    assert again.status_code == 201 and again.json()["assetlog_events"] == 0


def test_require_token_accepts_the_web_views_access_tokens_and_the_deprecated_key(isolated):
    # One rule for every listener: the tokens of `assetlog tokens create` (assetlog.tokens), checked by the
    # web view's own middleware; the old --api-key-env key still works beside them, with a deprecation line.
    import psycopg

    from assetlog.tokens import create_token, revoke_token

    migrate(isolated)
    with psycopg.connect(isolated.dsn) as conn:
        token, _ = create_token(conn, "openlineage client")
        revoked, _ = create_token(conn, "former client")
        revoke_token(conn, "former client")
    job_event = {"eventTime": "2026-03-01T12:00:00Z", "producer": "https://example.com/p",
                 "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/JobEvent",
                 "job": {"namespace": "dbt", "name": "model.tokens"},
                 "inputs": [{"namespace": PG, "name": "shop.public.orders"}],
                 "outputs": [{"namespace": "s3://lake", "name": "reports/tokens.parquet"}]}
    lineage = "/api/v1/lineage"
    with receiver(isolated, "--require-token", "--api-key-env", "OL_KEY", OL_KEY=API_KEY) as (url, process):
        def post(credential: str | None) -> int:
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            return httpx.post(url + lineage, json=job_event, headers=headers).status_code

        assert post(None) == 401
        assert post("alt_0123456789abcdef_" + "x" * 43) == 401  # well-formed, unknown
        assert post(revoked) == 401
        assert httpx.get(f"{url}/healthz").status_code == 200  # no lineage in it: open
        assert post(token) == 201
        assert post(API_KEY) == 201  # the deprecated key, still honoured
        process.terminate()
        stats = json.loads(process.communicate(timeout=60)[0])
    assert stats["accepted"] == 2 and stats["rejected"] == 0


def test_require_token_needs_a_migrated_database(isolated):
    done = subprocess.run([sys.executable, "-m", "assetlog", "ingest", "openlineage", "--listen", "127.0.0.1:0",
                           "--require-token"], env=isolated.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "assetlog db migrate" in done.stderr
