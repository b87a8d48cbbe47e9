"""`assetlog outbox status|flush|dead-letter|salvage`: see, drain and repair the producer's outbox.

Every problem with the outbox file (full, unwritable, damaged) is one line naming
the path and the way out; `status` only reads, so it works on a full disk and in
a read-only folder.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from assetlog.cli_support import add_json_flag, print_result, seconds, whole_number
from assetlog.config import Settings
from assetlog.errors import AssetlogError
from assetlog.producer.outbox import Outbox, outbox_path
from assetlog.producer.outbox_salvage import salvage
from assetlog.producer.publisher import Publisher
from assetlog.producer.recording_errors import outbox_problem

T = TypeVar("T")


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

    dead = actions.add_parser("dead-letter", help="move rows Kafka can never accept out of the outbox, or list them")
    which = dead.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=whole_number(1, 2**63 - 1), default=[], metavar="ID",
                       help="outbox row ids (see status)")
    which.add_argument("--undeliverable", action="store_true", help="every row marked undeliverable")
    which.add_argument("--list", action="store_true", help="list the dead letters kept so far")
    add_json_flag(dead)
    dead.set_defaults(handler=_dead_letter)

    salvage = actions.add_parser("salvage", help="keep the readable events of a damaged outbox, set the file aside")
    add_json_flag(salvage)
    salvage.set_defaults(handler=_salvage)


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


@contextmanager
def _problems_as_one_line(path: Any) -> Iterator[None]:
    """SQLite and file errors about the outbox become its one-line OutboxUnavailable."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        problem = outbox_problem(path, exc)
        if problem is None:
            raise
        raise problem from exc


def _with_outbox(use: Callable[[Any], T], *, read_only: bool) -> T | None:
    """`use(outbox)` on the configured outbox (None if there is no file)."""
    settings = Settings.from_env()
    path = outbox_path(settings.outbox_dir)
    if not path.exists():
        return None
    with _problems_as_one_line(path):
        outbox = Outbox(settings.outbox_dir, read_only=read_only)
        try:
            return use(outbox)
        finally:
            outbox.close()


def read_status() -> dict[str, Any]:
    status = _with_outbox(lambda outbox: outbox.status(), read_only=True)
    if status is None:
        path = outbox_path(Settings.from_env().outbox_dir)
        return {"path": str(path), "events": 0, "rows": 0, "oldest_age_seconds": None,
                "oldest_event_timestamp_seconds": None, "topics": {},
                "errors": [], "undeliverable": [], "dead_letters": {"rows": 0, "events": 0}, "publishers": []}
    return status


def _publisher_line(publisher: dict[str, Any]) -> str:
    where = f"pid {publisher['pid']} on {publisher['host']} ({publisher['events']} events)"
    if publisher["alive"] is False:
        return f"  held by a publisher that is gone: {where}; the next publisher takes its rows over"
    if publisher["alive"] is None:
        return f"  held by a publisher on another host: {where}, last heartbeat {publisher['heartbeat_age_seconds']}s ago"
    return f"  held by a running publisher: {where}"


def _status(args: argparse.Namespace) -> int:
    status = read_status()

    def human() -> str:
        lines = [f"outbox {status['path']}: empty" if not status["events"] else
                 f"outbox {status['path']}: {status['events']} events waiting, oldest "
                 f"{_age(status['oldest_age_seconds'])} old"]
        for topic, count in status["topics"].items():
            lines.append(f"  {topic:50} {count:>8}")
        for error in status["errors"]:
            lines.append(f"  last error ({error['events']} events): {error['error']}")
        for row in status["undeliverable"]:
            lines.append(f"  row {row['id']}: {row['events']} events for {row['topic']} can never be delivered "
                         f"({row['error']}): `assetlog outbox dead-letter --undeliverable` moves them out")
        if status["dead_letters"]["rows"]:
            lines.append(f"  {status['dead_letters']['events']} events kept as dead letters "
                         "(`assetlog outbox dead-letter --list`)")
        lines.extend(_publisher_line(p) for p in status["publishers"])
        return "\n".join(lines)

    print_result(args, status, human)
    return 0


def _flush(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    settings.require_kafka()
    if args.timeout is not None and args.timeout < 0:
        raise AssetlogError(f"--timeout must be 0 or more seconds, got {args.timeout}")
    before = read_status()["events"]
    publisher = Publisher(settings, flush_timeout=args.timeout)
    try:
        if publisher.outbox_problem is not None:
            raise AssetlogError(f"cannot flush: {publisher.outbox_problem}")
        result = publisher.flush()
    finally:
        publisher.close(timeout=0)
    after = read_status()
    waiting = int(after["events"])
    undeliverable = sum(row["events"] for row in after["undeliverable"])
    data = {"path": after["path"], "events_before": before, "delivered": max(0, before - waiting - undeliverable),
            "waiting": waiting, "undeliverable": undeliverable, "reason": result.reason if waiting else None,
            "publishers": after["publishers"]}
    print_result(args, data, lambda: f"outbox {data['path']}: {data['delivered']} events delivered, "
                                     f"{waiting} waiting, {undeliverable} undeliverable")
    if waiting:
        held = [p for p in after["publishers"] if p["alive"] is not False]
        why = result.reason or (f"held by a running publisher (pid {held[0]['pid']} on {held[0]['host']})"
                                if held else "not acknowledged")
        raise AssetlogError(f"{waiting} events could not be delivered to {settings.kafka_bootstrap} ({why}); "
                            f"they stay in the outbox {after['path']}")
    if undeliverable:
        raise AssetlogError(f"{undeliverable} events in the outbox {after['path']} can never be delivered "
                            f"({after['undeliverable'][0]['error']}): `assetlog outbox dead-letter --undeliverable` "
                            "moves them out of the way")
    return 0


def _dead_letter(args: argparse.Namespace) -> int:
    def act(outbox: Outbox) -> list[dict[str, Any]]:
        if args.list:
            return outbox.dead_letters()
        try:
            return outbox.dead_letter(None if args.undeliverable else args.ids)
        except (LookupError, PermissionError) as exc:
            raise AssetlogError(str(exc)) from exc

    rows = _with_outbox(act, read_only=args.list) or []
    data = {"dead_letters" if args.list else "moved": rows}

    def human() -> str:
        if args.list:
            return "\n".join(f"dead letter {r['id']} (was row {r['outbox_id']}): {r['events']} events for "
                             f"{r['topic']}: {r['error']}" for r in rows) or "no dead letters"
        return f"moved {sum(r['events'] for r in rows)} events ({len(rows)} rows) to the outbox's dead letters"

    print_result(args, data, human)
    return 0


def _salvage(args: argparse.Namespace) -> int:
    result = salvage(Settings.from_env().outbox_dir)

    def human() -> str:
        if not result["damaged"]:
            return f"outbox {result['path']}: not damaged, left as it is ({result['events_kept']} events waiting)"
        return (f"outbox {result['path']}: kept {result['events_kept']} events ({result['rows_kept']} rows), "
                f"{result['rows_lost']} rows unreadable; the damaged file is now {result['set_aside']}")

    print_result(args, result, human)
    return 0
