"""`assetlog tokens create|list|revoke`: the bearer tokens that let people and tools read the lineage."""

from __future__ import annotations

import argparse

import psycopg

from assetlog.cli_support import add_json_flag, print_result
from assetlog.config import Settings
from assetlog.tokens import create_token, list_tokens, revoke_token


def register(subparsers: argparse._SubParsersAction) -> None:
    tokens = subparsers.add_parser(
        "tokens", help="create, list and revoke the access tokens of the web view and its JSON API",
        description="Tokens are stored hashed in the projection database (ASSETLOG_POSTGRES_DSN); a new one is "
                    "shown once. Send it as `Authorization: Bearer <token>`, or sign in with it on the web view.")
    actions = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a token and print it (the only time it is shown)")
    create.add_argument("name", help="who or what the token is for, e.g. alice or grafana")
    add_json_flag(create)
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="the tokens, valid and revoked (never their secrets)")
    add_json_flag(listing)
    listing.set_defaults(handler=_list)
    revoke = actions.add_parser("revoke", help="revoke a token by name or id (it stops working within seconds)")
    revoke.add_argument("name", help="the token's name or id")
    add_json_flag(revoke)
    revoke.set_defaults(handler=_revoke)


def _connect():
    return psycopg.connect(Settings.from_env().require_postgres(), connect_timeout=10)


def _create(args: argparse.Namespace) -> int:
    with _connect() as conn:
        token, info = create_token(conn, args.name)
    result = {"token": token, **info.as_dict()}
    print_result(args, result, lambda: f"{token}\n(token {info.token_id} for {info.name}: shown only now; "
                                       "`assetlog tokens revoke` ends it)")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _connect() as conn:
        rows = [info.as_dict() for info in list_tokens(conn)]
    print_result(args, {"tokens": rows}, lambda: "\n".join(
        f"{row['token_id']}  {row['name']:30} created {row['created_at'][:19]}"
        + (f"  REVOKED {row['revoked_at'][:19]}" if row["revoked_at"] else "") for row in rows) or "no tokens")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _connect() as conn:
        info = revoke_token(conn, args.name)
    print_result(args, info.as_dict(), f"revoked token {info.token_id} ({info.name})")
    return 0
