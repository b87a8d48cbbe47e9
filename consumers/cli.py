"""`assetlog` subcommands of the consumers stage."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """No subcommands yet."""
