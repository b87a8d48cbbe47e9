"""`assetlog consume properties|lineage`: run one projection's consumer."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace

from assetlog.cli_support import add_json_flag, print_result, seconds, whole_number
from assetlog.config import Settings, parse_consumer_slot
from assetlog.consumers.membership import is_fenced
from assetlog.consumers.runner import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TIMEOUT,
    ProjectionRunner,
    tune_interpreter,
)
from assetlog.errors import AssetlogError, ConfigError
from assetlog.metrics import add_metrics_flags, start_from_args
from assetlog.projections import PROJECTIONS

MAX_BATCH_SIZE = 1_000_000  # librdkafka's most messages per consume() call
MAX_BATCH_TIMEOUT_MS = 3_600_000


def register(subparsers: argparse._SubParsersAction) -> None:
    consume = subparsers.add_parser(
        "consume", help="project the event topics into PostgreSQL (one consumer group per projection)",
        description="Run a projection's consumer: group <prefix>.<projection>, offsets stored in PostgreSQL "
                    "with the rows. Start as many processes as there are partitions to share the work. "
                    "SIGTERM or SIGINT finishes the batch in hand, then exits 0.",
    )
    consume.add_argument("projection", choices=sorted(PROJECTIONS),
                         help="properties (asset_properties, assets) or lineage (lineage_history, asset_edges)")
    consume.add_argument("--until-caught-up", action="store_true",
                         help="stop once every assigned partition reached its end (for scripts and tests)")
    consume.add_argument("--batch-size", type=whole_number(1, MAX_BATCH_SIZE), default=DEFAULT_BATCH_SIZE,
                         help=f"most messages per batch/transaction (default {DEFAULT_BATCH_SIZE})")
    consume.add_argument("--batch-timeout-ms", type=whole_number(1, MAX_BATCH_TIMEOUT_MS), default=int(DEFAULT_BATCH_TIMEOUT * 1000),
                         help="longest wait to fill a batch, in milliseconds "
                              f"(default {int(DEFAULT_BATCH_TIMEOUT * 1000)})")
    consume.add_argument("--slot", type=_slot, default=None, metavar="N|auto|none",
                         help="static group membership slot: the group.instance.id is <projection>.<host>.<N>, "
                              "so a process restarted in its slot gets its partitions back at once (default: "
                              "$ASSETLOG_CONSUMER_SLOT, else auto = the lowest slot free on this host; "
                              "none = dynamic membership, a restart waits the session timeout)")
    consume.add_argument("--quiet", action="store_true", help="log only warnings (retries, dead letters)")
    add_metrics_flags(consume)
    consume.add_argument("--lag-interval-seconds", type=seconds(0.1, 3600), default=5.0, metavar="S",
                         help="with --metrics-port: how often the lag is measured against the broker (default 5)")
    add_json_flag(consume)
    consume.set_defaults(handler=_consume)


def _slot(text: str) -> int | str:
    try:
        return parse_consumer_slot(text, "--slot")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _consume(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_interpreter()  # this process only consumes
    settings = Settings.from_env()
    if args.slot is not None:
        settings = replace(settings, consumer_slot=args.slot)
    settings.require_kafka()
    settings.require_postgres()
    runner = ProjectionRunner(args.projection, settings, until_caught_up=args.until_caught_up,
                              batch_size=args.batch_size, batch_timeout=args.batch_timeout_ms / 1000,
                              lag_interval=args.lag_interval_seconds if args.metrics_port is not None else None)

    def request_stop(signum, _frame) -> None:
        logging.getLogger("assetlog.consumers").info(
            "%s received: finishing the batch in hand", signal.Signals(signum).name)
        runner.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # Ready once the group gave this process its partitions (or none: then it stands by, also fine).
    metrics = start_from_args(args, ready=lambda: runner.assignment_known)
    try:
        stats = runner.run()
    except Exception as exc:
        if is_fenced(exc):
            raise AssetlogError(
                f"fenced: another consumer joined group {runner.group_id} with this process's "
                f"group.instance.id ({runner.instance_id}), so this one stopped; give each process its own "
                "--slot (two hosts with the same name, or two slot folders, claim the same ids)") from exc
        raise
    finally:
        if metrics is not None:
            metrics.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result = stats.as_dict()
    print_result(args, result, lambda: (
        f"{result['projection']}: {result['messages']} messages ({result['events']} events, "
        f"{result['dead_letters']} dead letters) in {result['batches']} batches, {result['seconds']}s, "
        f"{result['events_per_second']} events/s; stopped: {result['stopped_by']}"
    ))
    return 0
