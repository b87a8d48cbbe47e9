"""What every stage's CLI shares: printing a result (`--json` or human), and bounded number types.

A leaf module: it imports no stage and not the top-level `assetlog.cli`, so each
stage's `register(subparsers)` can use it without an import loop.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from assetlog.visible import visible  # bidi and terminal controls shown, not applied


def print_result(args: argparse.Namespace, data: Any, human: Callable[[], str] | str | None = None) -> None:
    """Print `data` as JSON with --json, else the human rendering (or JSON if none)."""
    if getattr(args, "json", False) or human is None:
        print(visible(json.dumps(data, indent=2, default=str, ensure_ascii=False)))
        return
    text = human() if callable(human) else human
    if text:
        print(visible(text))


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def whole_number(lowest: int, highest: int) -> Callable[[str], int]:
    """An argparse `type`: a whole number in [lowest, highest], else a usage error naming the range.

    Every number option has a range, so an absurd value ends as a one-line usage
    error, not as an overflow deep in PostgreSQL or librdkafka.
    """
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lowest <= value <= highest:
            raise argparse.ArgumentTypeError(f"must be from {lowest} to {highest}, got {value}")
        return value

    return parse


def seconds(lowest: float, highest: float) -> Callable[[str], float]:
    """An argparse `type`: a finite number of seconds in [lowest, highest]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not lowest <= value <= highest:  # false for nan too
            raise argparse.ArgumentTypeError(f"must be from {lowest:g} to {highest:g} seconds, got {text.strip()}")
        return value

    return parse
