"""`assetlog export openlineage --to URL | --to-kafka TOPIC | --to-file PATH`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from assetlog.cli_support import add_json_flag, print_result
from assetlog.config import Settings
from assetlog.errors import AssetlogError
from assetlog.integrations.openlineage.exporter import (
    Exporter,
    FileTarget,
    HttpTarget,
    KafkaTarget,
    TargetError,
)


def register(export: argparse._SubParsersAction) -> None:
    parser = export.add_parser("openlineage", help="send one OpenLineage RunEvent per materialization to a target")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="URL", help="an OpenLineage HTTP endpoint (Marquez: http://host:5000)")
    target.add_argument("--to-kafka", metavar="TOPIC", help="a Kafka topic, JSON values (the client's Kafka transport)")
    target.add_argument("--to-file", metavar="PATH", type=Path, help="append one JSON event per line to PATH")
    parser.add_argument("--api-key-env", metavar="VAR", help="send 'Authorization: Bearer' with the key in VAR (--to)")
    parser.add_argument("--group", help="consumer group (default <prefix>.openlineage-export)")
    parser.add_argument("--until-caught-up", action="store_true", help="stop once every event so far is exported")
    add_json_flag(parser)
    parser.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    settings.require_kafka()
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise AssetlogError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    try:
        if args.to:
            if not args.to.startswith(("http://", "https://")):
                raise AssetlogError(f"--to {args.to!r}: expected an http:// or https:// URL")
            target = HttpTarget(args.to, api_key)
            where = args.to
        elif args.to_kafka:
            target, where = KafkaTarget(settings, args.to_kafka), f"Kafka topic {args.to_kafka}"
        else:
            target, where = FileTarget(args.to_file), str(args.to_file)
    except TargetError as exc:
        raise AssetlogError(str(exc)) from None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    exporter = Exporter(settings, target, args.group)
    print(f"assetlog: exporting OpenLineage events to {where} (group {exporter.group})", file=sys.stderr, flush=True)
    try:
        stats = exporter.run(stop, until_caught_up=args.until_caught_up,
                             progress=lambda line: print(f"assetlog: {line}", file=sys.stderr, flush=True))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    data = asdict(stats)
    print_result(args, data, lambda: f"assetlog: exported {stats.exported} events ({stats.messages} messages read, "
                                     f"{stats.retries} retries)")
    return 0
