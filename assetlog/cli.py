"""The `assetlog` command: one entry point, one subcommand group per stage.

Each stage registers its own subcommands (`register(subparsers)`), so the CLI
mirrors the data flow. Errors a user can cause print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import psycopg
from confluent_kafka import KafkaException

from assetlog import __version__, demo, status_cli, tokens_cli
from assetlog.cli_support import add_json_flag, print_result, seconds, whole_number
from assetlog.compose import cli as compose_cli
from assetlog.consumers import cli as consumers_cli
from assetlog.consumers import replay_cli
from assetlog.errors import AssetlogError
from assetlog.integrations import cli as integrations_cli
from assetlog.producer import cli as producer_cli
from assetlog.projections import cli as projections_cli
from assetlog.query import cli as query_cli
from assetlog.web import cli as web_cli

# Stage CLIs import these from `assetlog.cli_support`; re-exported here for code that
# imported them from the top-level command before they moved.
__all__ = ["add_json_flag", "build_parser", "main", "print_result", "seconds", "whole_number"]


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (what is wrong, where help is) and exit status 2, like every
    other error a user can cause; subcommand parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="assetlog",
        description="Lineage for data workflows: events on Kafka, projections in PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"assetlog {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (demo, compose_cli, producer_cli, consumers_cli, replay_cli, projections_cli, query_cli, web_cli,
                   tokens_cli, status_cli, integrations_cli):
        module.register(subparsers)
    return parser


def _user_facing(exc: BaseException) -> str | None:
    """One-line text for infrastructure errors a user can fix, else None (a bug)."""
    if isinstance(exc, psycopg.OperationalError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot reach PostgreSQL ({first}); is ASSETLOG_POSTGRES_DSN right and the server up?"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return f"PostgreSQL refused: {str(exc).strip().splitlines()[0]}"
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return "the Assetlog tables do not exist in this database: run `assetlog db migrate` first"
    if isinstance(exc, KafkaException):
        return f"Kafka error: {exc.args[0] if exc.args else exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
