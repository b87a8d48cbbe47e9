"""`assetlog demo`: the main job, end to end."""

from __future__ import annotations

import argparse

from assetlog.cli import add_json_flag, print_result


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="start the stack if needed, run the example flows, project, print")
    add_json_flag(demo)
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from assetlog.compose.stack import LocalStack

    stack = LocalStack.default()
    result = stack.up()
    print_result(args, result)
    return 0
