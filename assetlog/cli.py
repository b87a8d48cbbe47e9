"""The `assetlog` command: one entry point, one subcommand group per stage.

Each stage registers its own subcommands (`register(subparsers)`), so the CLI
mirrors the data flow. Errors a user can cause print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from assetlog import __version__
from assetlog.cli_support import add_json_flag, print_result, seconds, whole_number
from assetlog.errors import AssetlogError

# Which module registers each command (`register(subparsers)`), in the order `--help` lists them. A
# command's run imports only its own module: every stage's imports together took about 0.6 s, most
# of it for commands not run (tests/test_cli_startup.py checks this table against the modules).
COMMANDS: dict[str, str] = {
    "demo": "assetlog.demo",
    "stack": "assetlog.compose.cli", "topics": "assetlog.compose.cli",
    "outbox": "assetlog.producer.cli",
    "consume": "assetlog.consumers.cli",
    "replay": "assetlog.consumers.replay_cli",
    "db": "assetlog.projections.cli",
    "assets": "assetlog.query.cli", "history": "assetlog.query.cli", "lineage": "assetlog.query.cli",
    "show": "assetlog.query.cli",
    "serve": "assetlog.web.cli",
    "tokens": "assetlog.tokens_cli",
    "status": "assetlog.status_cli",
    "export": "assetlog.integrations.cli", "ingest": "assetlog.integrations.cli",
}

# Stage CLIs import these from `assetlog.cli_support`; re-exported here for code that
# imported them from the top-level command before they moved.
__all__ = ["add_json_flag", "build_parser", "main", "print_result", "seconds", "whole_number"]


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (what is wrong, where help is) and exit status 2, like every
    other error a user can cause; subcommand parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or, given a known command, only the part of the module that has it."""
    parser = _OneLineParser(
        prog="assetlog",
        description="Lineage for data workflows: events on Kafka, projections in PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"assetlog {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(module).register(subparsers)
    return parser


def _user_facing(exc: BaseException) -> str | None:
    """One-line text for infrastructure errors a user can fix, else None (a bug). (A command imports
    only its own modules: an error of a client library it never imported cannot be one of its errors.)"""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        if isinstance(exc, psycopg.OperationalError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"cannot reach PostgreSQL ({first}); is ASSETLOG_POSTGRES_DSN right and the server up?"
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return f"PostgreSQL refused: {str(exc).strip().splitlines()[0]}"
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return "the Assetlog tables do not exist in this database: run `assetlog db migrate` first"
    kafka = sys.modules.get("confluent_kafka")
    if kafka is not None and isinstance(exc, kafka.KafkaException):
        return f"Kafka error: {exc.args[0] if exc.args else exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command comes first; anything else there (--help, --version, `--`, a typo) gets the whole parser.
    command = argv[0] if argv and not argv[0].startswith("-") else None
    args = build_parser(command).parse_args(argv)
    try:
        result = args.handler(args)
    except AssetlogError as exc:
        print(f"assetlog: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("assetlog: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        message = _user_facing(exc)
        if message is None:
            raise
        print(f"assetlog: {message}", file=sys.stderr)
        return 1
    return int(result or 0)
