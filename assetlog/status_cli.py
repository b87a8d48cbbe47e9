"""`assetlog status [--json]`: the operator's screen; exit 1 when something needs attention."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from assetlog.cli_support import add_json_flag, print_result, seconds, whole_number
from assetlog.config import Settings
from assetlog.status import Thresholds, gather

EXIT_ATTENTION = 1



def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser(
        "status", help="broker, database, topics, each projection's lag, dead letters, the local outbox",
        description="One screen for an operator. Exit status 0: all well; 1: something needs attention (each "
                    "finding is one line under ATTENTION); usable as a health check.")
    status.add_argument("--max-lag", type=whole_number(0, 10**12), default=1000, metavar="N",
                        help="messages a projection may be behind before it needs attention (default 1000)")
    status.add_argument("--stale-seconds", type=seconds(0, 7 * 86400), default=300.0, metavar="S",
                        help="a projection behind that committed nothing for this long is stuck (default 300)")
    status.add_argument("--outbox-age-seconds", type=seconds(0, 7 * 86400), default=60.0, metavar="S",
                        help="events older than this in the local outbox need attention (default 60)")
    add_json_flag(status)
    status.set_defaults(handler=_status)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"


def render(report: dict[str, Any]) -> str:
    kafka, postgres, outbox = report["kafka"], report["postgres"], report["outbox"]
    lines = [f"kafka      {'reachable' if kafka['reachable'] else 'UNREACHABLE'}  {kafka['bootstrap'] or ''}"]
    for topic, info in kafka.get("topics", {}).items():
        lines.append(f"  {topic:<44} {info['partitions']:>3} partitions  {info['messages_end']:>10} messages")
    where = f"{postgres.get('database', '')} (schema {postgres.get('schema_version', '?')})"
    lines.append(f"postgres   {'reachable' if postgres['reachable'] else 'UNREACHABLE'}  {where}")
    if report["projections"]:
        lines.append(f"  {'projection':<12}{'lag':>10}{'behind partitions':>19}  {'last commit':<20}"
                     f"{'generation':>11}{'dead letters 1h/1d':>20}")
    for name, projection in report["projections"].items():
        behind = {where: n for where, n in projection["lag"].items() if n}
        lines.append(f"  {name:<12}{sum(behind.values()):>10}{len(behind):>19}  {_when(projection['last_commit']):<20}"
                     f"{projection['generation']:>11}"
                     f"{projection['dead_letters_last_hour']:>12}/{projection['dead_letters_last_day']}")
    waiting = outbox.get("events", 0)
    age = outbox.get("oldest_age_seconds")
    lines.append(f"outbox     {waiting} events waiting" + (f", oldest {age:.0f}s" if age else "")
                 + (f"  {outbox['path']}" if outbox.get("path") else ""))
    lines.append("decoding   " + ("compiled Avro readers" if report["avro_reader"] == "compiled" else
                                  "generated Python Avro readers (the C extension was not built)"))
    lines.append("validation " + ("with its compiled fast path" if report.get("validation") == "compiled" else
                                  "in Python only (the C extension was not built)"))
    if report["attention"]:
        lines.append("ATTENTION")
        lines += [f"  - {finding}" for finding in report["attention"]]
    else:
        lines.append("all well")
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    limits = Thresholds(max_lag=args.max_lag, stale_seconds=args.stale_seconds,
                        outbox_age_seconds=args.outbox_age_seconds)
    report = gather(Settings.from_env(), limits)
    print_result(args, report, lambda: render(report))
    return EXIT_ATTENTION if report["attention"] else 0
