"""Prometheus metrics: every name Assetlog exports, and the opt-in port that serves them.

All metrics live in Assetlog's own registry (`REGISTRY`), never in the
process-wide default one, so a workflow worker that already exports its own
metrics chooses whether to add ours (`register_on`). Names follow Prometheus
conventions: units in the name, `_total` on counters, timestamps rather than
"seconds since", route templates rather than paths, and no label whose values
are unbounded (never an asset key).

`serve(port)` starts a small HTTP server on a daemon thread with `/metrics`,
`/healthz` (the process is alive) and `/readyz` (it does its job: connected,
partitions assigned); it exposes nothing but metrics and health, so it needs
no sign-in, and it listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from assetlog.cli_support import whole_number
from assetlog.errors import AssetlogError

REGISTRY = CollectorRegistry(auto_describe=True)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- consumers (`assetlog consume`) ---------------------------------------------------------------------
EVENTS_PROJECTED = Counter("assetlog_consumer_events_projected", "Events a projection applied, committed.",
                           ["projection", "topic"], registry=REGISTRY)
DEAD_LETTERS = Counter("assetlog_consumer_dead_letters", "Messages a projection dead-lettered, committed.",
                       ["projection", "topic", "reason"], registry=REGISTRY)
BATCH_SIZE = Histogram("assetlog_consumer_batch_size_messages", "Messages per committed batch.", ["projection"],
                       buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000), registry=REGISTRY)
BATCH_DURATION = Histogram("assetlog_consumer_batch_duration_seconds",
                           "From a batch's first message consumed to its commit.", ["projection"],
                           buckets=_SECONDS, registry=REGISTRY)
COMMIT_DURATION = Histogram("assetlog_consumer_commit_duration_seconds",
                            "The PostgreSQL transaction of one batch (rows, dead letters, offsets).",
                            ["projection"], buckets=_SECONDS, registry=REGISTRY)
LAG = Gauge("assetlog_consumer_lag_messages",
            "A partition's end offset minus the offset stored with the projection's rows.",
            ["projection", "topic", "partition"], registry=REGISTRY)
LAST_COMMIT = Gauge("assetlog_consumer_last_commit_timestamp_seconds",
                    "Unix time of the projection's last committed batch.", ["projection"], registry=REGISTRY)
OFFSET_MIRROR_FAILURES = Counter("assetlog_consumer_offset_mirror_failures",
                                 "Failed copies of the committed offsets to the Kafka group <group>.lag "
                                 "(monitoring only).", ["projection"], registry=REGISTRY)

# --- replay (`assetlog replay`, summed over its worker processes by the parent) ----------------------------
REPLAY_MESSAGES_READ = Gauge("assetlog_replay_messages_read", "Messages the running replay has read so far.",
                             ["projection"], registry=REGISTRY)
REPLAY_MESSAGES_TOTAL = Gauge("assetlog_replay_messages_to_read", "Messages the running replay must read.",
                              ["projection"], registry=REGISTRY)

# --- the web view (`assetlog serve`) ---------------------------------------------------------------------
HTTP_REQUESTS = Counter("assetlog_http_requests", "Requests answered, by route template and status.",
                        ["route", "method", "status"], registry=REGISTRY)
HTTP_DURATION = Histogram("assetlog_http_request_duration_seconds", "Time to answer a request, by route template.",
                          ["route"], buckets=_SECONDS, registry=REGISTRY)

# --- producers (a workflow worker: `assetlog.producer.register_metrics(registry)`) --------------------------
# The outbox gauges are read from the outbox file at each scrape (`assetlog.producer.outbox_metrics`):
OUTBOX_EVENTS = "assetlog_outbox_events"  # events waiting in the outbox (not yet acknowledged by Kafka)
OUTBOX_OLDEST_EVENT = "assetlog_outbox_oldest_event_timestamp_seconds"  # Unix time the oldest was written
OUTBOX_UNDELIVERABLE = "assetlog_outbox_undeliverable_events"  # set aside: Kafka refuses them for good
PUBLISH_DURATION = Histogram("assetlog_producer_publish_duration_seconds",
                             "From finished task runs' events taken into the outbox to Kafka acknowledging all "
                             "of them (one observation per outbox row of one topic).", ["topic"],
                             buckets=_SECONDS, registry=REGISTRY)
EVENTS_DELIVERED = Counter("assetlog_producer_events_delivered", "Events Kafka acknowledged (removed from the outbox).",
                           ["topic"], registry=REGISTRY)
DELIVERY_FAILURES = Counter("assetlog_producer_delivery_failures",
                            "Events whose delivery failed: `retried` stay in the outbox and are sent again, "
                            "`undeliverable` are refused by Kafka for good and set aside.", ["topic", "kind"],
                            registry=REGISTRY)
PRODUCER_RECONNECTS = Counter("assetlog_producer_reconnects",
                              "Times a publisher replaced its Kafka producer because it had known no broker for "
                              "the grace time (librdkafka would not reconnect it); its undelivered events were "
                              "sent again by the new one.", registry=REGISTRY)
PRODUCER = (PUBLISH_DURATION, EVENTS_DELIVERED, DELIVERY_FAILURES, PRODUCER_RECONNECTS)


ALL = (EVENTS_PROJECTED, DEAD_LETTERS, BATCH_SIZE, BATCH_DURATION, COMMIT_DURATION, LAG, LAST_COMMIT,
       REPLAY_MESSAGES_READ, REPLAY_MESSAGES_TOTAL, HTTP_REQUESTS, HTTP_DURATION)


def register_on(registry: CollectorRegistry, collectors: Iterable[object] = ALL) -> None:
    """Add Assetlog's metrics to another registry (a worker's own, or prometheus_client's default).

    The metrics stay in `REGISTRY` as well; a scrape of either sees the same values.
    """
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _app(ready: Callable[[], bool], registry: CollectorRegistry):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            is_ready = ready()
            start_response("200 OK" if is_ready else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ready\n" if is_ready else b"not ready\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics, /healthz or /readyz\n"]
    return app


class MetricsServer:
    """The running metrics port; `close()` stops it."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self.host, self.port = server.server_address[:2]
        self._thread = threading.Thread(target=server.serve_forever, name="assetlog-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(port: int, host: str = "127.0.0.1", ready: Callable[[], bool] = lambda: True,
          registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz on `host:port` (0 picks a free port) from a daemon thread."""
    try:
        server = make_server(host, port, _app(ready, registry), server_class=_ThreadingServer,
                             handler_class=_QuietHandler)
    except OSError as exc:
        raise AssetlogError(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): "
                            "choose another --metrics-port") from None
    return MetricsServer(server)


def add_metrics_flags(parser) -> None:
    """`--metrics-port` / `--metrics-host` for a long-running command."""
    parser.add_argument("--metrics-port", type=whole_number(0, 65535), default=None, metavar="PORT",
                        help="serve Prometheus /metrics, /healthz and /readyz on this port (0: a free one)")
    parser.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                        help="address of the metrics port (default 127.0.0.1)")



def start_from_args(args, ready: Callable[[], bool] = lambda: True) -> MetricsServer | None:
    """The metrics port a command asked for with --metrics-port, announced on stderr; None if not asked."""

    if getattr(args, "metrics_port", None) is None:
        return None
    server = serve(args.metrics_port, args.metrics_host, ready)
    print(f"assetlog: metrics on http://{server.host}:{server.port}/metrics", file=sys.stderr, flush=True)
    return server
