"""201 means durable: the receiver answers only after the outbox commit, 503 when the outbox cannot be
written, and every event that got a 201 survives SIGKILL of the receiver."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2 as httpx
import pytest
import uvicorn
from openlineage_receiver_support import migrate, project, receiver

from assetlog.integrations.openlineage.http import create_app
from assetlog.integrations.openlineage.naming import asset_key_for
from assetlog.integrations.openlineage.receiver import Ingestor
from assetlog.integrations.openlineage.runs import RunStore
from assetlog.producer.outbox import Outbox
from assetlog.producer.publisher import Publisher
from assetlog.query.store import AssetNotFound, LineageStore

LAKE = "s3://lake"


def complete_event(name: str, run_id: str | None = None) -> bytes:
    return json.dumps({
        "eventType": "COMPLETE", "eventTime": "2026-03-01T12:00:00+00:00",
        "run": {"runId": run_id or str(uuid.uuid4())}, "job": {"namespace": "durability", "name": "job"},
        "inputs": [{"namespace": LAKE, "name": "raw/orders.parquet"}],
        "outputs": [{"namespace": LAKE, "name": name}],
        "producer": "https://example.com/durability",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    }).encode()


@contextmanager
def serving(world, commit_timeout: float = 30.0) -> Iterator[tuple[str, Ingestor]]:
    """The receiver's app on uvicorn in this process (so a fault can be put into its outbox)."""
    store = RunStore(world.settings.outbox_dir)
    publisher = Publisher(world.settings)
    ingestor = Ingestor(publisher, store, commit_timeout=commit_timeout)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(ingestor), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the receiver did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1/lineage", ingestor
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        publisher.close(timeout=5)
        store.close()


def post_in_background(url: str, body: bytes) -> tuple[threading.Thread, dict]:
    answer: dict = {}

    def post() -> None:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
        answer.update(status=response.status_code, body=response.json(), at=time.monotonic())

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answer


def test_no_201_before_the_outbox_commit_returns(isolated, monkeypatch):
    # A commit that takes seconds (a slow or stalled disk) cannot be made on demand by a real
    # filesystem, so the outbox's append is wrapped in-process to block until released.
    gate, committed = threading.Event(), []
    real_append = Outbox.append

    def slow_append(self, rows, owner):
        gate.wait(30)
        ids = real_append(self, rows, owner)
        committed.append(time.monotonic())
        return ids

    monkeypatch.setattr(Outbox, "append", slow_append)
    with serving(isolated) as (url, _ingestor):
        thread, answer = post_in_background(url, complete_event("reports/slow.parquet"))
        thread.join(1.5)
        assert answer == {} and not committed  # still waiting for the commit: no answer yet
        gate.set()
        thread.join(30)
        assert answer["status"] == 201, answer
        assert committed and committed[0] < answer["at"]  # the 201 came after the commit returned


def test_503_while_the_outbox_cannot_be_written_then_201_once_it_can(isolated, monkeypatch):
    # We run as root, so a read-only outbox directory would still be writable; the write error is
    # injected in-process instead, as SQLite raises it for a read-only or full disk.
    broken = threading.Event()
    broken.set()
    real_append = Outbox.append

    def failing_append(self, rows, owner):
        if broken.is_set():
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real_append(self, rows, owner)

    monkeypatch.setattr(Outbox, "append", failing_append)
    run_id = str(uuid.uuid4())
    body = complete_event("reports/unwritable.parquet", run_id)
    with serving(isolated, commit_timeout=2.0) as (url, ingestor):
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert "cannot write the outbox" in error and "attempt to write a readonly database" in error, error
        assert ingestor.store.load(run_id).outputs == {}  # no run state saved for an event not stored
        broken.clear()
        # The writer retries the outbox twice a second; until it has, a resend is still a 503.
        deadline = time.monotonic() + 30
        while True:
            again = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
            if again.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert again.status_code == 201, again.text


def test_every_event_answered_201_survives_sigkill_under_load(isolated):
    migrate(isolated)
    acknowledged: list[str] = []
    stop = threading.Event()

    with receiver(isolated) as (base, process):
        def client(number: int) -> None:
            with httpx.Client(timeout=30) as http:
                for index in range(10_000):
                    if stop.is_set():
                        return
                    name = f"reports/{number}-{index}.parquet"
                    try:
                        response = http.post(f"{base}/api/v1/lineage", content=complete_event(name),
                                             headers={"content-type": "application/json"})
                    except httpx.HTTPError:
                        return  # killed mid-request: no answer, no promise
                    if response.status_code == 201:
                        acknowledged.append(name)

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # requests are in flight: some were answered, some not
        process.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(30)
    assert len(acknowledged) >= 150
    done = subprocess.run([sys.executable, "-m", "assetlog", "outbox", "flush", "--json"], env=isolated.env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    project(isolated)
    missing = []
    with LineageStore(isolated.dsn) as store:
        for name in acknowledged:
            try:
                store.asset(asset_key_for(LAKE, name))
            except AssetNotFound:
                missing.append(name)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged events were lost: {missing[:5]}"


@pytest.fixture(autouse=True)
def _quiet_publisher_logs(caplog):
    caplog.set_level("CRITICAL", logger="assetlog")  # the injected outbox errors are logged on purpose
