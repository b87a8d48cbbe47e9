"""`assetlog stack ...` and `assetlog topics create`."""

from __future__ import annotations

import argparse
import os
import re

from assetlog.cli_support import add_json_flag, print_result, whole_number
from assetlog.compose.stack import READONLY_ROLE, LocalStack, shell_exports
from assetlog.config import Settings
from assetlog.projections.migrate import migrate
from assetlog.topics import MAX_PARTITIONS, ensure_topics


def register(subparsers: argparse._SubParsersAction) -> None:
    stack = subparsers.add_parser("stack", help="run a local Kafka + PostgreSQL stack")
    actions = stack.add_subparsers(dest="stack_command", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="start the local broker and database (idempotent)")
    up.add_argument("--partitions", type=whole_number(1, MAX_PARTITIONS), default=3,
                    help="partitions of the event topics it creates")
    _add_secure_flag(up)
    up.add_argument("--standby", action="store_true",
                    help="also start a streaming hot standby of the local PostgreSQL; `stack env` then points "
                         "ASSETLOG_POSTGRES_READONLY_DSN at it")
    add_json_flag(up)
    up.set_defaults(handler=_up)

    down = actions.add_parser("down", help="stop what `stack up` started")
    down.add_argument("--purge", action="store_true", help="also delete the stack's data, ports and logs")
    _add_secure_flag(down)
    add_json_flag(down)
    down.set_defaults(handler=_down)

    status = actions.add_parser("status", help="report the broker and the database")
    _add_secure_flag(status)
    add_json_flag(status)
    status.set_defaults(handler=_status)

    env = actions.add_parser("env", help='print the variables for `eval "$(assetlog stack env)"`')
    _add_secure_flag(env)
    add_json_flag(env)
    env.set_defaults(handler=_env)

    topics = subparsers.add_parser("topics", help="manage the event topics")
    topic_actions = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = topic_actions.add_parser("create", help="create the event and dead-letter topics (never lose events)")
    create.add_argument("--partitions", type=whole_number(1, MAX_PARTITIONS), default=3,
                        help="partitions per event topic (default 3)")
    add_json_flag(create)
    create.set_defaults(handler=_topics_create)


def _add_secure_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secure", action="store_true",
                        help="the secure stack: Kafka over SASL_SSL (SCRAM-SHA-512), PostgreSQL over TLS "
                             "with passwords (its own folder, ports and data)")


def _up(args: argparse.Namespace) -> int:
    stack = LocalStack.default(secure=args.secure)
    with stack.alone():  # another `up` meanwhile waits, then finds it all done (topics and migrations too)
        result = stack.up(standby=args.standby)
        env = stack.env()
        settings = Settings.from_env({**os.environ, **env})
        result["topics"] = ensure_topics(settings, partitions=args.partitions)
        if not result["postgres"].get("external"):
            result["migrations"] = migrate(settings.require_postgres()).as_dict()
            if stack.secure:
                stack.postgres.set_password(READONLY_ROLE)

    def human() -> str:
        kafka, postgres = result["kafka"], result["postgres"]
        lines = []
        shown = [("kafka", kafka, "bootstrap"), ("postgres", postgres, "dsn")]
        if "standby" in result:
            shown.append(("standby", result["standby"], "dsn"))
        for label, info, endpoint in shown:
            how = "external" if info.get("external") else ("already running" if info.get("reused") else
                                                            f"started in {info.get('seconds')}s")
            lines.append(f"{label:9} {_hide_password(info.get(endpoint))}  ({how})")
        flag = " --secure" if stack.secure else ""
        lines.append(f"ready in {result['seconds']}s; use it with:  eval \"$(assetlog stack env{flag})\"")
        return "\n".join(lines)

    print_result(args, result, human)
    return 0


def _hide_password(endpoint: object) -> str | None:
    """A DSN as people see it: the secure stack's password stays in `stack env`."""
    return None if endpoint is None else re.sub(r"(://[^:/@]+):[^@]*@", r"\1:****@", str(endpoint))


def _down(args: argparse.Namespace) -> int:
    result = LocalStack.default(secure=args.secure).down(purge=args.purge)
    stopped = result["stopped"]
    print_result(args, result, lambda: "\n".join(
        f"{name:9} {'stopped' if was else 'was not running'}" for name, was in stopped.items()
    ) + ("\nlocal stack data deleted" if args.purge else ""))
    return 0


def _status(args: argparse.Namespace) -> int:
    result = LocalStack.default(secure=args.secure).status()

    def human() -> str:
        lines = []
        for name, endpoint in (("kafka", "bootstrap"), ("postgres", "dsn")):
            info = result[name]
            state = "reachable" if info["reachable"] else ("running, not answering" if info["running"] else "stopped")
            where = " (external)" if info["external"] else (f" pid {info['pid']}" if info["pid"] else "")
            lines.append(f"{name:9} {state}{where}  {_hide_password(info[endpoint]) or ''}".rstrip())
        if "standby" in result:
            standby = result["standby"]
            state = (f"streaming, {standby.get('bytes_behind')} WAL bytes behind (replay lag "
                     f"{standby.get('replay_lag_seconds')}s)" if standby.get("reachable")
                     else f"not answering ({standby.get('error')})")
            lines.append(f"{'standby':9} {state} pid {standby['pid']}  {standby['dsn']}")
        return "\n".join(lines)

    print_result(args, result, human)
    both = result["kafka"]["reachable"] and result["postgres"]["reachable"]
    return 0 if both else 3


def _env(args: argparse.Namespace) -> int:
    variables = LocalStack.default(secure=args.secure).env()
    print_result(args, variables, lambda: shell_exports(variables).rstrip("\n"))
    return 0


def _topics_create(args: argparse.Namespace) -> int:
    result = ensure_topics(Settings.from_env(), partitions=args.partitions)
    print_result(args, result, lambda: "\n".join(
        f"{topic:40} {state}" for topic, state in result.items()
    ))
    return 0
