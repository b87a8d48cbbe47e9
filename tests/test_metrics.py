"""Prometheus metrics of a running consumer and of the web view, scraped over HTTP on the real stack.

The consumer's lag falls to 0 when it catches up, rises while it is held up
(its PostgreSQL commit waits on a lock another session holds, while producers
go on) and falls again once it may commit; Kafka's own committed offsets for
the monitoring group `<group>.lag` follow PostgreSQL's, so the lag tools
operators run see the projection.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import psycopg
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions
from conftest import Isolated
from events_factory import guide_pipelines, publish
from fault_support import CONSUMER_KNOWING_NO_BROKER, topic_ends
from metrics_support import scrape, total
from query_world import reader_dsn

from assetlog.compose.processes import free_port
from assetlog.consumers.offset_mirror import OffsetMirror, monitoring_group
from assetlog.projections import migrate
from assetlog.topics import admin_client

pytestmark = pytest.mark.timeout(300)


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}; {getattr(check, 'last', '')}"
        time.sleep(0.2)


def answers(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@pytest.fixture
def consumer(isolated: Isolated) -> Iterator[int]:
    """`assetlog consume lineage --metrics-port P` as a process; yields P."""
    migrate(isolated.dsn)
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "assetlog", "consume", "lineage", "--quiet", "--metrics-port", str(port),
             "--lag-interval-seconds", "0.3"], env=isolated.env(), stdout=subprocess.DEVNULL, stderr=log)
        try:
            eventually(lambda: answers(f"http://127.0.0.1:{port}/readyz") == 200 or process.poll() is not None,
                       "the consumer's /readyz")
            assert process.poll() is None, log.seek(0) or log.read()
            assert answers(f"http://127.0.0.1:{port}/healthz") == 200
            yield port
        finally:
            process.terminate()
            process.wait(30)


def kafka_group_lag(isolated: Isolated) -> int:
    """What `kafka-consumer-groups --describe --group <prefix>.lineage.lag` would show as the total lag."""
    admin = admin_client(isolated.settings)
    group = monitoring_group(f"{isolated.settings.topic_prefix}.lineage")
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    committed = {(tp.topic, tp.partition): tp.offset for tp in future.result().topic_partitions}
    return sum(end - max(committed.get(tp, 0), 0) for tp, end in topic_ends(isolated.settings).items())


def test_consumer_lag_falls_to_zero_rises_while_held_up_and_falls_again(isolated: Isolated, consumer: int) -> None:
    first = publish(isolated.settings, [e for run in guide_pipelines() for e in run.events()])

    def caught_up(expected: int) -> Callable[[], bool]:
        def check() -> bool:
            metrics = scrape(consumer)
            lags = [value for _, value in metrics.get("assetlog_consumer_lag_messages", [])]
            check.last = (total(metrics, "assetlog_consumer_events_projected_total", projection="lineage"),  # type: ignore[attr-defined]
                          expected, lags)
            return (total(metrics, "assetlog_consumer_events_projected_total", projection="lineage") == expected
                    and bool(lags) and not any(lags))
        return check

    eventually(caught_up(len(first)), "lineage caught up, lag 0")
    metrics = scrape(consumer)
    assert total(metrics, "assetlog_consumer_batch_size_messages_count", projection="lineage") >= 1
    assert total(metrics, "assetlog_consumer_last_commit_timestamp_seconds", projection="lineage") > time.time() - 60
    eventually(lambda: kafka_group_lag(isolated) == 0, "Kafka's copy of the offsets at the end")

    with psycopg.connect(isolated.dsn) as blocker:
        blocker.execute("LOCK TABLE consumer_offsets IN ACCESS EXCLUSIVE MODE")  # the next commit waits
        second = publish(isolated.settings, [e for run in guide_pipelines() for e in run.events()])
        eventually(lambda: total(scrape(consumer), "assetlog_consumer_lag_messages") == len(second),
                   "the lag rises to what was published while the consumer is held up")
        assert kafka_group_lag(isolated) == len(second)
        blocker.rollback()  # let it commit
    eventually(caught_up(len(first) + len(second)), "lineage caught up again, lag 0")
    eventually(lambda: kafka_group_lag(isolated) == 0, "Kafka's copy caught up")
    assert total(scrape(consumer), "assetlog_consumer_offset_mirror_failures_total") == 0


def test_the_offset_copy_closes_once_its_last_commit_is_answered_not_after_a_fixed_wait(isolated: Isolated) -> None:
    # Every consumer closes its copy on exit: a close that waited its whole timeout (2 s) made every
    # `consume --until-caught-up`, and every run in the benchmarks and tests, 2 s longer.
    publish(isolated.settings, [e for run in guide_pipelines() for e in run.events()])
    ends = topic_ends(isolated.settings)
    mirror = OffsetMirror(isolated.settings, f"{isolated.settings.topic_prefix}.lineage", "lineage", interval=60)
    mirror.track(ends)  # copied by close() itself: the interval has not come
    started = time.monotonic()
    mirror.close(timeout=5.0)
    closed_in = time.monotonic() - started
    assert kafka_group_lag(isolated) == 0, "close() returned before its last commit was answered"
    assert closed_in < 1.5, f"close() took {closed_in:.2f} s"


def test_an_offset_copy_client_that_forgot_every_broker_is_replaced_and_the_copy_goes_on(isolated: Isolated) -> None:
    """A client left knowing no broker after a broker restart would fail every copy for as long as its
    consumer runs. The statistics that say so are fed by hand: a real broker leaves a client in that
    state only by chance (1 restart in 31, `assetlog/broker_watch.py`); the replacement is real."""
    publish(isolated.settings, [e for run in guide_pipelines() for e in run.events()])
    ends = topic_ends(isolated.settings)
    mirror = OffsetMirror(isolated.settings, f"{isolated.settings.topic_prefix}.lineage", "lineage", interval=0.1)
    try:
        mirror.brokers.grace = 0
        mirror.track(ends)  # before the mirror's first round: the client that copies them is the new one
        mirror.brokers(CONSUMER_KNOWING_NO_BROKER)
        eventually(lambda: mirror.reconnects == 1, "the client replaced")
        eventually(lambda: kafka_group_lag(isolated) == 0, "the offsets copied by the new client")
    finally:
        mirror.close()
    assert mirror.reconnects == 1


def test_an_offset_copy_client_that_cannot_be_replaced_yet_is_tried_again_and_never_stops_the_copy(
        isolated: Isolated, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the new client fails once (mocked: a real broker gives no such fault on demand); the mirror
    counts a failure, keeps its thread and succeeds at its next round."""
    from assetlog.consumers import offset_mirror
    from assetlog.metrics import REGISTRY

    def failures() -> float:
        return REGISTRY.get_sample_value("assetlog_consumer_offset_mirror_failures_total", {"projection": "lineage"}) or 0

    publish(isolated.settings, [e for run in guide_pipelines() for e in run.events()])
    ends = topic_ends(isolated.settings)
    real, calls = offset_mirror.commit_only_consumer, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first replacement
            raise RuntimeError("no client for now")
        return real(*args, **kwargs)

    monkeypatch.setattr(offset_mirror, "commit_only_consumer", flaky)
    failures_before = failures()
    mirror = OffsetMirror(isolated.settings, f"{isolated.settings.topic_prefix}.lineage", "lineage", interval=0.1)
    try:
        mirror.brokers.grace = 0
        mirror.track(ends)
        mirror.brokers(CONSUMER_KNOWING_NO_BROKER)
        eventually(lambda: mirror.reconnects == 1, "the client replaced at the second try")
        eventually(lambda: kafka_group_lag(isolated) == 0, "the offsets copied by the new client")
    finally:
        mirror.close()
    assert len(calls) == 3
    assert failures() >= failures_before + 1


def test_web_view_counts_requests_by_route_template_never_by_key(isolated: Isolated) -> None:
    migrate(isolated.dsn)
    web_port, metrics_port = free_port(), free_port()
    env = isolated.env(ASSETLOG_POSTGRES_READONLY_DSN=reader_dsn(isolated.dsn))
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen([sys.executable, "-m", "assetlog", "serve", "--port", str(web_port),
                                   "--metrics-port", str(metrics_port)], env=env, stdout=log, stderr=log)
        try:
            eventually(lambda: answers(f"http://127.0.0.1:{web_port}/healthz") == 200, "the web view")
            for key in ("s3://a/secret-one.csv", "s3://b/secret-two.csv"):
                assert answers(f"http://127.0.0.1:{web_port}/api/asset?key={key}") == 401
            metrics = scrape(metrics_port)
            assert total(metrics, "assetlog_http_requests_total", route="/api/asset", status="401") == 2
            assert total(metrics, "assetlog_http_request_duration_seconds_count", route="/api/asset") == 2
            labels = " ".join(str(found) for samples in metrics.values() for found, _ in samples)
            assert "secret" not in labels
        finally:
            server.terminate()
            server.wait(30)


def test_replay_reports_messages_read_against_messages_to_read(isolated: Isolated, monkeypatch) -> None:
    from assetlog.cli import main
    from assetlog.metrics import REGISTRY

    migrate(isolated.dsn)
    published = publish(isolated.settings, [e for run in guide_pipelines() for e in run.events()])
    for name, value in isolated.env().items():
        monkeypatch.setenv(name, value)
    assert main(["replay", "lineage", "--json", "--metrics-port", "0"]) == 0
    read = REGISTRY.get_sample_value("assetlog_replay_messages_read", {"projection": "lineage"})
    to_read = REGISTRY.get_sample_value("assetlog_replay_messages_to_read", {"projection": "lineage"})
    assert read == to_read == len(published)


def test_openlineage_receiver_refuses_an_open_public_port_and_counts_requests(isolated: Isolated) -> None:
    open_port = subprocess.run([sys.executable, "-m", "assetlog", "ingest", "openlineage", "--listen", "0.0.0.0:0",
                                "--no-auth"],
                               env=isolated.env(), capture_output=True, text=True, timeout=60, check=False)
    assert open_port.returncode == 1 and len(open_port.stderr.strip().splitlines()) == 1, open_port.stderr
    assert "only on a loopback address" in open_port.stderr
    web_port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryFile("w+") as log:
        receiver = subprocess.Popen([sys.executable, "-m", "assetlog", "ingest", "openlineage", "--listen",
                                     f"127.0.0.1:{web_port}", "--no-auth", "--metrics-port", str(metrics_port)],
                                    env=isolated.env(), stdout=log, stderr=log)
        try:
            eventually(lambda: answers(f"http://127.0.0.1:{web_port}/healthz") == 200, "the receiver")
            request = urllib.request.Request(f"http://127.0.0.1:{web_port}/api/v1/lineage", data=b"{not json",
                                             headers={"Content-Type": "application/json"}, method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 400
            metrics = scrape(metrics_port)
            assert total(metrics, "assetlog_http_requests_total", route="/api/v1/lineage", status="400") == 1
        finally:
            receiver.terminate()
            receiver.wait(30)
