"""`assetlog ingest openlineage` (HTTP receiver or Kafka reader) and `assetlog export openlineage`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import asdict

from assetlog.cli_support import add_json_flag, print_result, whole_number
from assetlog.config import Settings
from assetlog.errors import AssetlogError
from assetlog.integrations.openlineage import export_cli
from assetlog.integrations.openlineage.http import LINEAGE_PATH, create_app
from assetlog.integrations.openlineage.kafka_ingest import KafkaIngest
from assetlog.integrations.openlineage.receiver import DEFAULT_MAX_EVENT_BYTES, Ingestor
from assetlog.integrations.openlineage.runs import RunStore
from assetlog.metrics import add_metrics_flags, start_from_args
from assetlog.producer.publisher import Publisher
from assetlog.query.store import LineageStore
from assetlog.tokens import TokenChecker, stored_digest
from assetlog.web.cli import _is_loopback, _listen, _require_token_table, serve_app


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:5000), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(ingest: argparse._SubParsersAction, export: argparse._SubParsersAction) -> None:
    parser = ingest.add_parser("openlineage", help="receive OpenLineage RunEvents (HTTP or Kafka transport)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--listen", type=_host_port, metavar="HOST:PORT",
                        help="serve POST /api/v1/lineage on HOST:PORT (port 0 picks a free one)")
    source.add_argument("--from-kafka", metavar="TOPIC", help="read JSON events from TOPIC (bad ones go to TOPIC.dlq)")
    parser.add_argument("--require-token", action="store_true",
                        help="--listen: every request needs 'Authorization: Bearer <token>' with an access token "
                             "of `assetlog tokens create NAME` (the web view's tokens, checked in the projection "
                             "database)")
    parser.add_argument("--no-auth", action="store_true",
                        help="--listen: accept requests without a token, as `assetlog serve --no-auth` does "
                             "(loopback addresses only; for a proxy that authenticates in front of it)")
    parser.add_argument("--api-key-env", metavar="VAR",
                        help="deprecated, use --require-token: also accept 'Authorization: Bearer <key>' with the "
                             "key in environment variable VAR")
    parser.add_argument("--max-event-bytes", type=whole_number(1024, 64 * 1024 * 1024), default=None, metavar="N",
                        help="refuse events larger than N bytes of JSON (default 524288)")
    parser.add_argument("--group", help="consumer group for --from-kafka (default <prefix>.openlineage-ingest)")
    parser.add_argument("--access-log", action="store_true", help="log every request on stderr")
    add_metrics_flags(parser)
    add_json_flag(parser)
    parser.set_defaults(handler=_ingest)
    export_cli.register(export)


def _ingest(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    settings.require_kafka()
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise AssetlogError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if (args.require_token or api_key or args.no_auth) and not args.listen:
        raise AssetlogError("--require-token, --no-auth and --api-key-env are about the HTTP receiver: "
                            "use them with --listen")
    if args.no_auth and (args.require_token or api_key):
        raise AssetlogError("--no-auth cannot be combined with --require-token or --api-key-env")
    limit = DEFAULT_MAX_EVENT_BYTES if args.max_event_bytes is None else args.max_event_bytes
    if limit < 1024:
        raise AssetlogError(f"--max-event-bytes must be at least 1024, got {limit}")
    store = RunStore(settings.outbox_dir)
    publisher = Publisher(settings)
    try:
        ingestor = Ingestor(publisher, store, limit)
        if args.listen:
            stats = _serve(args, ingestor, api_key)
        else:
            stats = _read_kafka(args, settings, ingestor)
    finally:
        result = publisher.close()
        store.close()
    stats["outbox_waiting"] = result.waiting
    print_result(args, stats, lambda: "assetlog: stopped; " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return 0


def _serve(args: argparse.Namespace, ingestor, api_key: str | None) -> dict[str, int]:
    host, port = args.listen
    if not (args.require_token or api_key):  # the web view's rule: a token, or --no-auth on loopback only
        if not args.no_auth:
            raise AssetlogError("the receiver requires access tokens: start it with --require-token (clients send "
                                "one as their `api_key`; `assetlog tokens create NAME`), or with --no-auth on a "
                                "loopback address")
        if not _is_loopback(host):
            raise AssetlogError(f"--no-auth is allowed only on a loopback address, not {host}: require access "
                                "tokens with --require-token, or listen on 127.0.0.1 behind a proxy")
    store = _token_store() if args.require_token else None
    if api_key:
        print("assetlog: --api-key-env is deprecated and will be removed: give each client an access token "
              "(`assetlog tokens create NAME`) and start the receiver with --require-token", file=sys.stderr)
    metrics = None
    try:
        sock = _listen(host, port)
        app = create_app(ingestor, _token_checker(store, api_key) if (store or api_key) else None)
    except BaseException:
        if store is not None:
            store.close()
        raise
    try:
        bound, port = sock.getsockname()[:2]
        shown = f"[{bound}]" if ":" in bound else bound
        print(f"assetlog: receiving OpenLineage events on http://{shown}:{port}{LINEAGE_PATH} (Ctrl-C stops it)",
              file=sys.stderr, flush=True)
        metrics = start_from_args(args)
        serve_app(app, sock, args.access_log)
    finally:
        if metrics is not None:
            metrics.close()
        sock.close()
        if store is not None:
            store.close()
    return app.state.counters.as_dict()


def _token_store():
    """The projection database's read connection, where access tokens are checked (as the web view does)."""
    store = LineageStore.from_settings(Settings.from_env(), pool_size=2, application_name="assetlog.openlineage")
    try:
        _require_token_table(store)
    except BaseException:
        store.close()
        raise
    return store


def _token_checker(store, api_key: str | None):
    lookup = (lambda token_id: store.read(lambda conn: stored_digest(conn, token_id))) if store else None
    return TokenChecker(lookup, legacy_key=api_key)


def _read_kafka(args: argparse.Namespace, settings, ingestor) -> dict[str, int]:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    reader = KafkaIngest(settings, ingestor, args.from_kafka, args.group)
    print(f"assetlog: reading OpenLineage events from {args.from_kafka} (group {reader.group}; Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    try:
        stats = reader.run(stop, progress=lambda line: print(f"assetlog: {line}", file=sys.stderr, flush=True))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return asdict(stats)
