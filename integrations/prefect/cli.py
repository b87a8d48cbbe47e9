"""`assetlog ingest prefect`: follow a Prefect server's asset events (see `follower`)."""

from __future__ import annotations

import argparse
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from assetlog.cli_support import add_json_flag, print_result, seconds
from assetlog.config import Settings, state_home
from assetlog.errors import AssetlogError
from assetlog.integrations.prefect.follower import Checkpoint, Follower, PrefectEvents, check_retention
from assetlog.producer.publisher import Publisher

DEFAULT_INTERVAL = 5.0
DEFAULT_SETTLE = 10.0
DEFAULT_RETENTION_DAYS = 7.0  # Prefect's own default (PREFECT_SERVER_EVENTS_RETENTION_PERIOD)


def register(ingest: argparse._SubParsersAction, export: argparse._SubParsersAction) -> None:
    follow = ingest.add_parser("prefect", help="publish a Prefect server's asset events (Prefect Cloud included)")
    follow.add_argument("--api-url", default=None,
                        help="the Prefect API, e.g. http://127.0.0.1:4200/api (default: PREFECT_API_URL)")
    follow.add_argument("--api-key", default=None,
                        help="a Prefect Cloud API key (default: PREFECT_API_KEY; none for a Prefect server)")
    follow.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint file (default: <state home>/prefect-follower/<topic prefix>.json)")
    follow.add_argument("--once", action="store_true", help="catch up to now, then exit")
    follow.add_argument("--interval", type=seconds(0.1, 3600), default=DEFAULT_INTERVAL, metavar="S",
                        help=f"seconds between polls (default {DEFAULT_INTERVAL:g})")
    follow.add_argument("--settle", type=seconds(0, 3600), default=DEFAULT_SETTLE, metavar="S",
                        help=f"read events at least S seconds old, so late-stored ones are not passed "
                             f"(default {DEFAULT_SETTLE:g})")
    follow.add_argument("--retention-days", type=seconds(0.01, 36500), default=DEFAULT_RETENTION_DAYS, metavar="D",
                        help=f"the server's event retention (default {DEFAULT_RETENTION_DAYS:g}): an older "
                             "checkpoint is a gap, reported instead of skipped")
    follow.add_argument("--accept-gap", action="store_true",
                        help="go on from what the server still has after a reported gap")
    add_json_flag(follow)
    follow.set_defaults(handler=_follow)


def _follow(args: argparse.Namespace) -> int:
    api_url = args.api_url or os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise AssetlogError("no Prefect API: pass --api-url or set PREFECT_API_URL")
    for name in ("interval", "settle", "retention_days"):
        if getattr(args, name) < 0:
            raise AssetlogError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    settings = Settings.from_env()
    settings.require_kafka()
    checkpoint_path = args.checkpoint or state_home() / "prefect-follower" / f"{settings.topic_prefix}.json"
    if not args.accept_gap:
        check_retention(Checkpoint.load(checkpoint_path), timedelta(days=args.retention_days), datetime.now(UTC))
    publisher = Publisher(settings)
    api_key = args.api_key or os.environ.get("PREFECT_API_KEY")
    follower = Follower(PrefectEvents(api_url, api_key), publisher, checkpoint_path)
    settle = timedelta(seconds=args.settle)
    try:
        if args.once:
            counts = follower.step(datetime.now(UTC) - settle)
            print_result(args, {**counts, "checkpoint": str(checkpoint_path)},
                         lambda: f"{counts['read']} Prefect events read, {counts['published']} materializations "
                                 f"published; checkpoint {checkpoint_path}")
            return 0
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        try:
            follower.follow(args.interval, settle, lambda: bool(stopping))
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        publisher.close()
