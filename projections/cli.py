"""`assetlog db migrate` (create or upgrade the projection tables), `assetlog db partitions` (history months)
and `assetlog db warm` (the read path's pages into PostgreSQL's cache)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import psycopg

from assetlog.cli_support import add_json_flag, print_result
from assetlog.config import Settings
from assetlog.projections.migrate import migrate, require_migrated
from assetlog.projections.partitions import (
    ARCHIVE_SCHEMA,
    create_range,
    detach_before,
    list_partitions,
    month_of,
)
from assetlog.projections.shadow import live_schema
from assetlog.projections.warm import summary, warm_read_path


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="manage the projection database")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    migrate = actions.add_parser(
        "migrate", help="create or upgrade the tables (idempotent; records the applied schema versions)"
    )
    add_json_flag(migrate)
    migrate.set_defaults(handler=_migrate)

    partitions = actions.add_parser(
        "partitions", help="list, create ahead or detach the monthly partitions of lineage_history")
    what = partitions.add_subparsers(dest="partitions_command", metavar="ACTION", required=True)
    listing = what.add_parser("list", help="every partition: its month, estimated rows, size (DEFAULT last)")
    add_json_flag(listing)
    listing.set_defaults(handler=_list)
    create = what.add_parser("create", help="create the missing months up to --through (the writers also create "
                                            "the current and next month, and any month they meet)")
    create.add_argument("--from", dest="first", type=month_argument, default=None, metavar="YYYY-MM",
                        help="first month (default: the current one)")
    create.add_argument("--through", type=month_argument, required=True, metavar="YYYY-MM",
                        help="last month to create")
    add_json_flag(create)
    create.set_defaults(handler=_create)
    detach = what.add_parser(
        "detach", help="detach every month ending at or before --before and move it to the schema "
                       "assetlog_archive (to dump and drop; the topics keep the events)")
    detach.add_argument("--before", type=month_argument, required=True, metavar="YYYY-MM",
                        help="detach the months before this one (at most the current month)")
    detach.add_argument("--dry-run", action="store_true", help="name the months it would detach, change nothing")
    add_json_flag(detach)
    detach.set_defaults(handler=_detach)

    warm = actions.add_parser(
        "warm", help="load the pages lineage walks and asset lookups read into shared buffers (pg_prewarm), "
                     "e.g. after a restart or a replay; needs the pg_prewarm extension")
    add_json_flag(warm)
    warm.set_defaults(handler=_warm)


def month_argument(text: str) -> datetime:
    """YYYY-MM (the first instant of that month, UTC)."""
    try:
        parsed = datetime.strptime(text.strip(), "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a month: {text!r} (expected YYYY-MM, e.g. 2026-01)") from None
    return parsed.replace(tzinfo=UTC)


def _migrate(args: argparse.Namespace) -> int:
    result = migrate(Settings.from_env().require_postgres()).as_dict()

    def human() -> str:
        applied = result["applied"]
        if applied:
            return f"applied migrations {', '.join(f'{v:04d}' for v in applied)}; schema version {result['version']}"
        return f"nothing to do; schema version {result['version']}"

    print_result(args, result, human)
    return 0


def _connect():
    conn = psycopg.connect(Settings.from_env().require_postgres(), autocommit=True,
                           application_name="assetlog.partitions")
    try:
        require_migrated(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _list(args: argparse.Namespace) -> int:
    with _connect() as conn:
        found = [p.as_dict() for p in list_partitions(conn, live_schema(conn))]

    def human() -> str:
        return "\n".join(
            f"{p['name']:<32} {'DEFAULT' if p['default'] else p['from'][:7]:<8} ~{p['estimated_rows']:>12,} rows "
            f"{p['bytes'] / 2**20:>10.1f} MiB{'' if p['refuses_truncate'] else '  (TRUNCATE NOT REFUSED)'}"
            for p in found)

    print_result(args, {"partitions": found}, human)
    return 0


def _create(args: argparse.Namespace) -> int:
    first = args.first or month_of(datetime.now(UTC))
    with _connect() as conn:
        created = create_range(conn, live_schema(conn), first, args.through)
    moved = {name: rows for name, rows in created.items() if rows}

    def human() -> str:
        if not created:
            return "nothing to do: every month exists"
        return f"created {', '.join(created)}" + "".join(
            f"; moved {rows:,} rows of {name} out of the default partition" for name, rows in moved.items())

    print_result(args, {"created": list(created), "moved_from_default": moved}, human)
    return 0


def _detach(args: argparse.Namespace) -> int:
    with _connect() as conn:
        done = detach_before(conn, live_schema(conn), args.before, dry_run=args.dry_run)
    names = [p.name for p in done]
    result = {"detached": [] if args.dry_run else names, "would_detach": names if args.dry_run else [],
              "archive_schema": ARCHIVE_SCHEMA, "dry_run": args.dry_run}

    def human() -> str:
        if not names:
            return "nothing to detach"
        if args.dry_run:
            return f"would detach {', '.join(names)} into {ARCHIVE_SCHEMA}"
        return (f"detached {', '.join(names)} into {ARCHIVE_SCHEMA}: dump them (pg_dump -t '{ARCHIVE_SCHEMA}.*') "
                "and drop them when you no longer need them")

    print_result(args, result, human)
    return 0


def _warm(args: argparse.Namespace) -> int:
    with _connect() as conn:
        warmed, buffers_mib = warm_read_path(conn)
    result = summary(warmed, buffers_mib)

    def human() -> str:
        lines = [f"{w.relation:<24} {w.mib:>10.1f} MiB  {'loaded' if w.loaded else 'SKIPPED: past shared_buffers'}"
                 f"  ({w.reads})" for w in warmed]
        return "\n".join([*lines, f"loaded {result['loaded_mib']:,} MiB into {buffers_mib:,.0f} MiB of shared_buffers"])

    print_result(args, result, human)
    return 0
