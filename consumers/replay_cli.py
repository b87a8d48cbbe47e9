"""`assetlog replay PROJECTION [--check] [--since TIME]`: rebuild from the topics, swap or audit."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any

from assetlog.cli_support import add_json_flag, print_result, seconds, whole_number
from assetlog.config import Settings
from assetlog.consumers.behind import summary
from assetlog.consumers.cli import MAX_BATCH_SIZE
from assetlog.consumers.progress import Progress
from assetlog.consumers.replay import Replay
from assetlog.consumers.runner import DEFAULT_BATCH_SIZE, tune_interpreter
from assetlog.errors import AssetlogError
from assetlog.metrics import REPLAY_MESSAGES_READ, REPLAY_MESSAGES_TOTAL, add_metrics_flags, start_from_args
from assetlog.projections import PROJECTIONS
from assetlog.query.timeparse import parse_time

MAX_WORKERS = 64  # processes; each holds a Kafka consumer and a PostgreSQL connection


def register(subparsers: argparse._SubParsersAction) -> None:
    replay = subparsers.add_parser(
        "replay", help="rebuild projection tables from the topics (zero downtime), or audit them with --check",
        description="Rebuild the tables of a projection from the event topics into shadow tables while the live "
                    "tables keep serving reads and the live consumers keep running, then swap them in atomically "
                    "together with the consumers' offsets. With --check, compare the rebuild with the live tables "
                    "instead (at the live consumers' offsets) and exit 1 on any drift, or when a live consumer is "
                    "behind the end of the topics (stuck on a message, or not running).",
    )
    replay.add_argument("projection", choices=[*sorted(PROJECTIONS), "all"],
                        help="properties (asset_properties, assets), lineage (lineage_history, asset_edges) or all")
    replay.add_argument("--check", action="store_true",
                        help="compare the rebuild with the live tables (rows missing, extra, different); "
                             "swap nothing; exit 1 on drift")
    replay.add_argument("--since", metavar="TIME",
                        help="lineage only: keep the history read before TIME and re-read the messages appended "
                             "to Kafka since (ISO-8601, UTC unless an offset is given)")
    replay.add_argument("--batch-size", type=whole_number(1, MAX_BATCH_SIZE), default=DEFAULT_BATCH_SIZE,
                        help=f"most messages per batch/transaction (default {DEFAULT_BATCH_SIZE})")
    replay.add_argument("--workers", type=whole_number(1, MAX_WORKERS), default=None,
                        help="processes reading the partitions in parallel (default: one per CPU, at most 4, "
                             "for 100k+ messages; else 1)")
    replay.add_argument("--examples", type=whole_number(1, 10_000), default=3,
                        help="with --check: rows shown per kind of drift and table (default 3)")
    replay.add_argument("--no-warm", action="store_true",
                        help="after the swap, do not load the swapped-in tables' read path into shared buffers "
                             "(by default the replay does, as `assetlog db warm` would)")
    add_metrics_flags(replay)
    replay.add_argument("--grace", type=seconds(0, 3600), default=5.0,
                        help="with --check: seconds live consumers get to reach the end of the topics seen at the "
                             "start before they count as behind (default 5)")
    add_json_flag(replay)
    replay.set_defaults(handler=_replay)



def _replay(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        since = parse_time(args.since) if args.since else None
    except ValueError as exc:
        raise AssetlogError(f"--since: {exc}") from None
    tune_interpreter()  # this process only replays
    label = f"replay{' --check' if args.check else ''} {args.projection}"
    replay = Replay(Settings.from_env(), args.projection, check=args.check, since=since,
                    batch_size=args.batch_size, progress=Progress.auto(label, quiet=args.json),
                    examples=args.examples, workers=args.workers, grace=args.grace, warm=not args.no_warm)

    def interrupt(signum, _frame) -> None:
        raise KeyboardInterrupt  # unwinds like Ctrl-C: the swap transaction rolls back, shadow dropped

    # The parent counts what every worker process read (they report to its progress), so one
    # process's gauges cover them all.
    REPLAY_MESSAGES_READ.labels(projection=args.projection).set_function(lambda: replay.progress.done)
    REPLAY_MESSAGES_TOTAL.labels(projection=args.projection).set_function(lambda: replay.progress.total)
    metrics = start_from_args(args)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        result = replay.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if metrics is not None:
            metrics.close()
    data = result.as_dict()
    print_result(args, data, lambda: _human(data))
    drifted = result.drifted
    if drifted:
        print("assetlog: drift in " + ", ".join(f"{t.table} ({_kinds(t.as_dict())})" for t in drifted)
              + ": the live tables differ from a rebuild from the topics; `assetlog replay "
              + f"{args.projection}` replaces them", file=sys.stderr)
    if result.behind:
        print(f"assetlog: {summary(result.behind)}", file=sys.stderr)
    if result.warm is not None and not result.warm["warmed"] and not args.no_warm:
        print(f"assetlog: replayed, but {', '.join(result.warm['not_warmed'])} not warmed into shared buffers "
              f"({result.warm['reason']}); `assetlog db warm` loads them", file=sys.stderr)
    standby = (result.warm or {}).get("standby")
    if standby is not None and not standby["warmed"] and not args.no_warm:
        print(f"assetlog: replayed, but the standby of ASSETLOG_POSTGRES_READONLY_DSN was not warmed "
              f"({standby['reason']}); `assetlog db warm` with ASSETLOG_POSTGRES_DSN set to it loads them",
              file=sys.stderr)
    return 1 if drifted or result.behind else 0


def _kinds(table: dict[str, Any]) -> str:
    return ", ".join(f"{table[k]} {k}" for k in ("missing", "extra", "different") if table[k])


def _human(data: dict[str, Any]) -> str:
    rate = f"{data['messages']:,} messages read in {data['phases'].get('read', 0):.1f}s " \
           f"({data['events_per_second']:,.0f} events/s), {data['seconds']:.1f}s in all"
    if data["mode"] == "swap":
        generations = ", ".join(f"{k} {v}" for k, v in sorted(data["generations"].items()))
        return (f"replay {data['projection']}: {rate}; swapped in (generation {generations}) after "
                f"{data['catch_up_rounds']} catch-up round(s) and {data['swap_attempts']} swap attempt(s)"
                + _warmed(data.get("warm")))
    lines = [f"{'table':<28}{'live rows':>12}{'rebuilt':>12}{'missing':>10}{'extra':>10}{'different':>11}"]
    for table in data["tables"]:
        lines.append(f"{table['table']:<28}{table['live_rows']:>12,}{table['rebuilt_rows']:>12,}"
                     f"{table['missing']:>10,}{table['extra']:>10,}{table['different']:>11,}")
    for table in data["tables"]:
        for kind, examples in table["examples"].items():
            for example in examples:
                lines.append(f"  {table['table']} {kind}: {_example(kind, example)}")
    for item in data["behind"]:
        lines.append(f"  {item['projection']} {item['state']} at {item['topic']}[{item['partition']}] offset "
                     f"{item['offset']}, {item['lag']:,} short of the end ({item['end']})")
    verdict = "DRIFT" if data["drift"] else "no drift"
    lag = f"; {len(data['behind'])} partition(s) behind the end" if data["behind"] else "; at the end of the topics"
    lines.append(f"replay --check {data['projection']}: {verdict} at the live offsets{lag}; {rate}")
    return "\n".join(lines)


def _warmed(warm: dict[str, Any] | None) -> str:
    """The swap line's tail: what was loaded into shared buffers (a warm that did not run is said on stderr)."""
    if not warm or not warm["warmed"]:
        return ""
    loaded = [r["relation"] for r in warm["relations"] if r["loaded"]]
    skipped = f"; past shared_buffers, not loaded: {', '.join(warm['skipped'])}" if warm["skipped"] else ""
    standby = warm.get("standby")
    on_standby = f"; on the standby {standby['loaded_mib']:,} MiB in {standby['seconds']:.1f}s" \
        if standby and standby["warmed"] else ""
    return (f"; warmed {warm['loaded_mib']:,} MiB ({', '.join(loaded) or 'nothing'}) into shared buffers in "
            f"{warm['seconds']:.1f}s{skipped}{on_standby}")


def _example(kind: str, example: Any) -> str:
    if kind == "different":
        columns = "; ".join(f"{c}: live {json.dumps(v['live'], default=str)[:80]} != rebuilt "
                            f"{json.dumps(v['rebuilt'], default=str)[:80]}" for c, v in example["columns"].items())
        return f"{json.dumps(example['key'], default=str)} {columns}"
    rest = {c: v for c, v in example["row"].items() if c not in example["key"]}
    return f"{json.dumps(example['key'], default=str)} {json.dumps(rest, default=str, ensure_ascii=False)[:200]}"
