"""`assetlog db migrate`: create or upgrade the projection tables."""

from __future__ import annotations

import argparse

from assetlog.cli_support import add_json_flag, print_result


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="manage the projection database")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    migrate = actions.add_parser(
        "migrate", help="create or upgrade the tables (idempotent; records the applied schema versions)"
    )
    add_json_flag(migrate)
    migrate.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from assetlog.config import Settings
    from assetlog.projections.migrate import migrate

    result = migrate(Settings.from_env().require_postgres()).as_dict()

    def human() -> str:
        applied = result["applied"]
        if applied:
            return f"applied migrations {', '.join(f'{v:04d}' for v in applied)}; schema version {result['version']}"
        return f"nothing to do; schema version {result['version']}"

    print_result(args, result, human)
    return 0
