"""No event lost: the outbox holds what Kafka has not acknowledged, and the next
publisher (another process, or `assetlog outbox flush`) delivers it exactly as written.

An unreachable broker is a real address where nothing listens (a closed port on
127.0.0.1), never a mock, and the shared broker is never stopped.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from producer_support import read_published

from assetlog.config import Settings
from assetlog.producer import Publisher, add_asset_metadata, flow, materialize, publishing
from assetlog.producer.outbox import Outbox, pack_messages, unpack_messages
from assetlog.producer.recording_errors import MissingTopics
from assetlog.topics import ensure_topics


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unreachable(settings: Settings) -> Settings:
    return replace(settings, kafka_bootstrap=f"127.0.0.1:{closed_port()}")


def outbox_messages(directory: Path) -> list[tuple[str, str, bytes]]:
    outbox = Outbox(directory)
    try:
        rows = outbox.conn.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()
    finally:
        outbox.close()
    return [(topic, key.decode(), value) for topic, payload in rows for key, value in unpack_messages(payload)]


def outbox_status(directory: Path) -> dict:
    outbox = Outbox(directory)
    try:
        return outbox.status()
    finally:
        outbox.close()


@materialize("s3://outbox/out", asset_deps=["s3://outbox/in"])
def build(n: int) -> int:
    add_asset_metadata("s3://outbox/out", {"n": n})
    return n


@flow
def three_runs() -> None:
    for n in range(1000, 1003):
        build(n)


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_payloads_round_trip_and_corruption_is_detected():
    messages = [(b"s3://a", b"\x00\x01value"), (b"", b""), ("ü".encode(), bytes(range(256)) * 10)]
    assert unpack_messages(pack_messages(messages)) == messages
    with pytest.raises(ValueError, match="corrupt"):
        unpack_messages(pack_messages(messages)[:-3])


def test_with_the_broker_unreachable_the_flow_ends_promptly_and_the_next_publisher_delivers(isolated):
    down = unreachable(isolated.settings)
    with Publisher(down, flush_timeout=10) as publisher, publishing(publisher):
        started = time.monotonic()
        three_runs()
        flow_seconds = time.monotonic() - started
    assert flow_seconds < 5, f"the flow waited {flow_seconds:.1f}s for an unreachable broker"
    written = outbox_messages(isolated.settings.outbox_dir)
    assert len(written) == 9
    assert outbox_status(isolated.settings.outbox_dir)["topics"] == {t: 3 for t in isolated.settings.topics.events}
    assert read_published(isolated.settings) == []

    with Publisher(isolated.settings) as publisher:  # starts on the same outbox, real broker
        result = publisher.flush()
    assert result.complete
    arrived = read_published(isolated.settings, at_least=9)
    assert sorted((m.topic, m.key, m.value) for m in arrived) == sorted(written)
    assert outbox_status(isolated.settings.outbox_dir)["events"] == 0


def test_without_a_bootstrap_events_wait_in_the_outbox(isolated):
    offline = replace(isolated.settings, kafka_bootstrap=None)
    with Publisher(offline) as publisher, publishing(publisher):
        three_runs()
        assert publisher.flush().waiting == 9
    with Publisher(isolated.settings) as publisher:
        assert publisher.flush().complete
    assert len(read_published(isolated.settings, at_least=9)) == 9


def test_a_worker_that_exits_with_events_in_the_outbox_is_drained_by_assetlog_outbox_flush(isolated, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import os
        from assetlog.producer import add_asset_metadata, flow, materialize

        @materialize("s3://worker/out", asset_deps=["s3://worker/in"])
        def build(n):
            add_asset_metadata("s3://worker/out", {"n": n})

        @flow
        def worker_flow():
            for n in range(3):
                build(n)

        worker_flow()
        print("flow ended", flush=True)
        os._exit(0)  # no interpreter shutdown, no atexit: only what the flow end guaranteed
    """))
    port = closed_port()
    env = isolated.env(ASSETLOG_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", ASSETLOG_FLUSH_TIMEOUT_SECONDS="3")
    proc = subprocess.Popen([sys.executable, str(worker)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "flow ended" in stdout
    assert "unreachable" in stderr  # a warning, not a line per reconnect attempt
    assert stderr.count("unreachable") <= 2, stderr

    status = cli("outbox", "status", "--json", env=isolated.env())
    assert status.returncode == 0, status.stderr
    waiting = json.loads(status.stdout)
    assert waiting["events"] == 9 and waiting["oldest_age_seconds"] >= 0
    assert waiting["oldest_event_timestamp_seconds"] <= time.time()  # as the outbox metric
    assert "9 events waiting" in cli("outbox", "status", env=isolated.env()).stdout

    flushed = cli("outbox", "flush", "--json", env=isolated.env())
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["delivered"] == 9
    arrived = read_published(isolated.settings, at_least=9)
    assert len(arrived) == 9
    assert {m.record["producer"]["pid"] for m in arrived} == {proc.pid}
    assert json.loads(cli("outbox", "status", "--json", env=isolated.env()).stdout)["events"] == 0


def test_outbox_flush_fails_with_one_clear_line_when_kafka_is_unreachable(isolated):
    with Publisher(replace(isolated.settings, kafka_bootstrap=None)) as publisher, publishing(publisher):
        three_runs()
    port = closed_port()
    proc = cli("outbox", "flush", "--timeout", "3", env=isolated.env(ASSETLOG_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"))
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("assetlog:")]
    assert len(lines) == 1, proc.stderr
    assert f"9 events could not be delivered to 127.0.0.1:{port}" in lines[0]
    assert "stay in the outbox" in lines[0]
    assert outbox_status(isolated.settings.outbox_dir)["events"] == 9


def test_a_delivery_error_keeps_the_row_and_the_event_is_retried(isolated):
    # A prefix whose topics do not exist yet (auto-creation is off): a real delivery error. A
    # publisher refuses missing topics when it starts, so this one skips that check (as happens
    # when the brokers were down at its start, or do not let it describe topics).
    missing = replace(isolated.settings, topic_prefix=isolated.settings.topic_prefix + ".late")
    publisher = Publisher(missing, producer_config={"message.timeout.ms": 1500}, verify_topics=False)
    try:
        with publishing(publisher):
            three_runs()  # the flow ends once the delivery reports came back failed
        status = outbox_status(missing.outbox_dir)
        assert status["events"] == 9
        assert status["errors"] and status["errors"][0]["events"] == 9
        assert status["undeliverable"] == []  # a retriable error: never set aside
        ensure_topics(missing, partitions=3)
        deadline = time.monotonic() + 30
        while outbox_status(missing.outbox_dir)["events"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert outbox_status(missing.outbox_dir)["events"] == 0
    finally:
        publisher.close()
    try:
        assert len(read_published(missing, at_least=9)) == 9
    finally:
        from assetlog.topics import admin_client, all_topics

        admin_client(missing).delete_topics(all_topics(missing.topics), operation_timeout=30)


def test_a_producer_whose_topics_are_missing_fails_fast_naming_them(isolated):
    missing = replace(isolated.settings, topic_prefix=isolated.settings.topic_prefix + ".late")
    started = time.monotonic()
    with pytest.raises(MissingTopics) as refused, publishing(missing):
        three_runs()
    seconds = time.monotonic() - started
    assert seconds < 4, f"took {seconds:.1f}s to notice the missing topics"
    for topic in missing.topics.events:
        assert topic in str(refused.value)
    assert "assetlog topics create" in str(refused.value)


def test_a_live_publishers_rows_are_left_to_it_and_adopted_once_it_is_gone(isolated):
    holder = Publisher(unreachable(isolated.settings), flush_timeout=1)
    try:
        with publishing(holder):
            three_runs()
        with Publisher(isolated.settings) as other:
            assert other.flush().complete
        assert outbox_status(isolated.settings.outbox_dir)["events"] == 9
        assert read_published(isolated.settings) == []
    finally:
        holder.close(timeout=0)
    with Publisher(isolated.settings) as successor:
        assert successor.flush().complete
    assert len(read_published(isolated.settings, at_least=9)) == 9


def test_rows_of_a_publisher_with_a_stale_heartbeat_are_adopted(isolated):
    outbox = Outbox(isolated.settings.outbox_dir)
    try:
        outbox.register("ghost")
        outbox.append([(isolated.settings.topics.materializations, [(b"k", b"v")])], "ghost")
        assert outbox.adopt("me") == []  # the ghost looks alive
        outbox.conn.execute("UPDATE publishers SET heartbeat_at = 0 WHERE owner = 'ghost'")
        adopted = outbox.adopt("me")
        assert [(row.topic, row.events) for row in adopted] == [(isolated.settings.topics.materializations, 1)]
        outbox.heartbeat("ghost")  # back from the dead: registered again, its new rows are its own
        outbox.append([(isolated.settings.topics.metadata, [(b"k", b"v")])], "ghost")
        assert outbox.adopt("me") == adopted
    finally:
        outbox.close()


def test_events_of_tasks_outside_flows_are_delivered_at_interpreter_exit(isolated, tmp_path):
    script = tmp_path / "standalone.py"
    script.write_text(textwrap.dedent("""
        from assetlog.producer import materialize

        @materialize("s3://standalone/out")
        def build():
            return 1

        build()  # no flow: nothing flushes until the interpreter exits
    """))
    proc = subprocess.run([sys.executable, str(script)], env=isolated.env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    [event] = read_published(isolated.settings, at_least=1)
    assert event.record["asset_key"] == "s3://standalone/out" and event.record["run"]["flow_run_id"] is None
    assert outbox_status(isolated.settings.outbox_dir)["events"] == 0
