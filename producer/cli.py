"""`assetlog outbox status|flush`: see and drain the producer's outbox."""

from __future__ import annotations

import argparse
from typing import Any

from assetlog.cli_support import add_json_flag, print_result, seconds
from assetlog.errors import AssetlogError


def register(subparsers: argparse._SubParsersAction) -> None:
    outbox = subparsers.add_parser("outbox", help="the producer's durable outbox of undelivered events")
    actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)

    status = actions.add_parser("status", help="how many events wait, since when, for which topics")
    add_json_flag(status)
    status.set_defaults(handler=_status)

    flush = actions.add_parser("flush", help="send what waits (exit 1 if some could not be delivered)")
    flush.add_argument("--timeout", type=seconds(0, 86_400), default=None, metavar="S",
                       help="seconds to wait for acknowledgements (default ASSETLOG_FLUSH_TIMEOUT_SECONDS or 10)")
    add_json_flag(flush)
    flush.set_defaults(handler=_flush)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def read_status() -> dict[str, Any]:
    from assetlog.config import Settings
    from assetlog.producer.outbox import Outbox, outbox_path

    settings = Settings.from_env()
    path = outbox_path(settings.outbox_dir)
    if not path.exists():
        return {"path": str(path), "events": 0, "rows": 0, "oldest_age_seconds": None, "topics": {},
                "errors": [], "publishers": []}
    outbox = Outbox(settings.outbox_dir)
    try:
        return outbox.status()
    finally:
        outbox.close()


def _status(args: argparse.Namespace) -> int:
    status = read_status()

    def human() -> str:
        if not status["events"]:
            return f"outbox {status['path']}: empty"
        lines = [f"outbox {status['path']}: {status['events']} events waiting, oldest "
                 f"{_age(status['oldest_age_seconds'])} old"]
        for topic, count in status["topics"].items():
            lines.append(f"  {topic:50} {count:>8}")
        for error in status["errors"]:
            lines.append(f"  last error ({error['events']} events): {error['error']}")
        for publisher in status["publishers"]:
            lines.append(f"  held by a running publisher: pid {publisher['pid']} on {publisher['host']} "
                         f"({publisher['events']} events)")
        return "\n".join(lines)

    print_result(args, status, human)
    return 0


def _flush(args: argparse.Namespace) -> int:
    from assetlog.config import Settings
    from assetlog.producer.outbox import Outbox
    from assetlog.producer.publisher import Publisher

    settings = Settings.from_env()
    settings.require_kafka()
    if args.timeout is not None and args.timeout < 0:
        raise AssetlogError(f"--timeout must be 0 or more seconds, got {args.timeout}")
    before = read_status()["events"]
    publisher = Publisher(settings, flush_timeout=args.timeout)
    try:
        result = publisher.flush()
    finally:
        publisher.close(timeout=0)
    outbox = Outbox(settings.outbox_dir)
    try:
        after = outbox.status()
    finally:
        outbox.close()
    waiting = int(after["events"])
    data = {"path": after["path"], "events_before": before, "delivered": max(0, before - waiting),
            "waiting": waiting, "reason": result.reason if waiting else None, "publishers": after["publishers"]}
    print_result(args, data, lambda: f"outbox {data['path']}: {data['delivered']} events delivered, "
                                     f"{waiting} waiting")
    if waiting:
        held = after["publishers"]
        why = result.reason or (f"held by a running publisher (pid {held[0]['pid']} on {held[0]['host']})"
                                if held else "not acknowledged")
        raise AssetlogError(f"{waiting} events could not be delivered to {settings.kafka_bootstrap} ({why}); "
                            f"they stay in the outbox {after['path']}")
    return 0
