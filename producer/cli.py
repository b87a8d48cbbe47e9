"""`assetlog` subcommands of the producer stage."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """No subcommands yet."""
