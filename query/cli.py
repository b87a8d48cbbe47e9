"""`assetlog assets | show | lineage | history`: read-only questions from the command line.

They connect with ASSETLOG_POSTGRES_READONLY_DSN when it is set, else with
ASSETLOG_POSTGRES_DSN in read-only transactions. Tables for people, `--json`
(or `--format json`) for scripts. An unknown key is one line and exit status
1; a malformed option is argparse's usage error and exit status 2.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from assetlog.cli_support import add_json_flag, print_result, whole_number
from assetlog.query.catalog import parse_cursor
from assetlog.query.render import assets_table, details_text, history_table, lineage_text
from assetlog.query.store import LineageStore
from assetlog.query.timeparse import parse_time

# Bounds of the number options: far above any real answer, well inside PostgreSQL's bigint.
MAX_ROWS = 1_000_000
_positive = whole_number(1, MAX_ROWS)


def _as_of(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cursor(text: str) -> str:
    try:
        parse_cursor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_as_of(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as-of", type=_as_of, metavar="TIME",
                        help="answer as of this moment, from the history (ISO-8601; no offset means UTC)")


def register(subparsers: argparse._SubParsersAction) -> None:
    assets = subparsers.add_parser("assets", help="list or search assets (key, name, description, owners)")
    assets.add_argument("--search", metavar="TEXT", help="keep assets whose key, name, description or an owner "
                                                         "contains TEXT (any case)")
    assets.add_argument("--owner", metavar="OWNER", help="keep assets with this owner (exact)")
    assets.add_argument("--limit", type=_positive, default=100, metavar="N", help="at most N assets (100)")
    assets.add_argument("--after", metavar="KEY", help="continue after this key (printed when there are more)")
    add_json_flag(assets)
    assets.set_defaults(handler=_assets)

    show = subparsers.add_parser("show", help="one asset: properties, last materialization, metadata, neighbours")
    show.add_argument("key", metavar="KEY")
    _add_as_of(show)
    add_json_flag(show)
    show.set_defaults(handler=_show)

    lineage = subparsers.add_parser("lineage", help="what feeds an asset and what it feeds")
    lineage.add_argument("key", metavar="KEY")
    side = lineage.add_mutually_exclusive_group()
    side.add_argument("--upstream", dest="direction", action="store_const", const="upstream",
                      help="only what feeds KEY")
    side.add_argument("--downstream", dest="direction", action="store_const", const="downstream",
                      help="only what KEY feeds (what breaks if it changes)")
    lineage.set_defaults(direction="both")
    lineage.add_argument("--depth", type=_positive, metavar="N", help="at most N hops (default: unlimited)")
    lineage.add_argument("--limit", type=_positive, metavar="N",
                         help="at most N assets; a bigger answer is cut off and says so (default 1000)")
    lineage.add_argument("--format", choices=("table", "json", "mermaid", "dot"), default="table")
    _add_as_of(lineage)
    add_json_flag(lineage)
    lineage.set_defaults(handler=_lineage)

    history = subparsers.add_parser("history", help="materializations of an asset, newest first")
    history.add_argument("key", metavar="KEY")
    history.add_argument("--limit", type=_positive, default=20, metavar="N", help="N per page (20)")
    page = history.add_mutually_exclusive_group()
    page.add_argument("--before", type=_cursor, metavar="CURSOR",
                      help="the page after a previous one (the cursor it printed), or runs before a TIME")
    page.add_argument("--page", type=_positive, metavar="P", help="page number P (1 = newest)")
    add_json_flag(history)
    history.set_defaults(handler=_history)


def _store() -> LineageStore:
    """The store from the environment's settings."""
    return LineageStore.from_settings()


def _assets(args: argparse.Namespace) -> int:
    with _store() as store:
        page = store.search(args.search, owner=args.owner, limit=args.limit, after=args.after)
    print_result(args, page.to_json(), lambda: assets_table(page))
    return 0


def _show(args: argparse.Namespace) -> int:
    with _store() as store:
        details = store.asset(args.key, as_of=args.as_of)
    print_result(args, details.to_json(), lambda: details_text(details))
    return 0


def _lineage(args: argparse.Namespace) -> int:
    with _store() as store:
        graph = store.lineage(args.key, direction=args.direction, depth=args.depth, limit=args.limit,
                              as_of=args.as_of)
    print(lineage_text(graph, "json" if args.json else args.format))
    return 0


def _history(args: argparse.Namespace) -> int:
    offset = (args.page - 1) * args.limit if args.page else 0
    with _store() as store:
        page = store.history(args.key, limit=args.limit, before=args.before, offset=offset)
    print_result(args, page.to_json(), lambda: history_table(page))
    return 0
