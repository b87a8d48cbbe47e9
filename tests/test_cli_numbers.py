"""Every number option has a range: an absurd value is one line and exit status 2, never a traceback.

Before, `--limit 99999999999999999999` reached PostgreSQL as a bigint overflow
(a traceback), `outbox flush --timeout nan` was accepted, `serve --connections
100000` tried to open a pool that size and `replay --workers 1000` to start a
thousand processes. These run in-process: argparse stops before any server is
touched.
"""

from __future__ import annotations

import argparse

import pytest

from assetlog.cli import build_parser, main

HUGE = "99999999999999999999"


@pytest.mark.parametrize("args", [
    ["lineage", "s3://k", "--depth", HUGE],
    ["lineage", "s3://k", "--limit", HUGE],
    ["assets", "--limit", HUGE],
    ["history", "s3://k", "--limit", HUGE],
    ["history", "s3://k", "--page", HUGE],
    ["history", "s3://k", "--page", "0"],
    ["consume", "lineage", "--batch-size", "2000000"],
    ["consume", "lineage", "--batch-timeout-ms", HUGE],
    ["consume", "lineage", "--slot", "10000"],
    ["replay", "all", "--batch-size", "0"],
    ["replay", "all", "--workers", "1000"],
    ["replay", "all", "--examples", HUGE],
    ["serve", "--port", "70000"],
    ["serve", "--connections", "100000"],
    ["serve", "--connections", "0"],
    ["demo", "--partitions", "0"],
    ["stack", "up", "--partitions", HUGE],
    ["topics", "create", "--partitions", "-3"],
    ["outbox", "flush", "--timeout", "nan"],
    ["outbox", "flush", "--timeout", "-1"],
    ["outbox", "flush", "--timeout", "inf"],
])
def test_out_of_range_numbers_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("assetlog ") and f"error: argument {args[-2]}: " in lines[0], lines[0]
    assert args[-1] in lines[0]  # names the value it refused


def test_every_number_option_is_bounded() -> None:
    """A bare `type=int` or `type=float` on any subcommand accepts overflow and nan: none may remain."""
    unbounded = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.type in (int, float):
                unbounded.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "assetlog")
    assert unbounded == []


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["lineage"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "assetlog lineage: error: the following arguments are required: KEY (see `assetlog lineage --help`)"]
