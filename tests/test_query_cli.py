"""`assetlog assets | show | lineage | history`, end to end: events published to the real broker,
projected by the real consumers (`assetlog consume ... --until-caught-up`), queried by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import Isolated, StackEndpoints, create_isolated, drop_isolated
from events_factory import (
    CUSTOMERS,
    DASHBOARD,
    DASHBOARD_V2,
    GOLD,
    LOOKUP,
    PROCESSED,
    SALES,
    SILVER,
    USERS,
    at,
    events_of,
    guide_pipelines,
    publish,
)
from psycopg import conninfo
from query_world import REPORT, REPORT_V1, SOURCE_A, SOURCE_B, as_of_runs, reader_dsn

from assetlog.cli import main
from assetlog.config import ENV_POSTGRES_DSN, ENV_POSTGRES_READONLY_DSN

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


@pytest.fixture(scope="module")
def world(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    isolated = create_isolated(stack, tmp_path_factory.mktemp("outbox"))
    try:
        publish(isolated.settings, events_of(guide_pipelines() + as_of_runs()))
        for command in (["db", "migrate"], ["consume", "properties", "--until-caught-up", "--quiet"],
                        ["consume", "lineage", "--until-caught-up", "--quiet"]):
            done = run(isolated.env(), *command)
            assert done.returncode == 0, done.stderr
        yield isolated
    finally:
        drop_isolated(stack, isolated)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def ok(env: dict[str, str], *args: str) -> str:
    done = run(env, *args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout


def field(text: str, label: str) -> str:
    """The value printed after `label` in `assetlog show`'s aligned output."""
    for line in text.splitlines()[1:]:
        if line.strip().startswith(label + "  "):
            return line.strip()[len(label):].strip()
    raise AssertionError(f"no {label!r} line in:\n{text}")


def test_assets_lists_the_seed_pipelines(world: Isolated) -> None:
    listing = json.loads(ok(world.env(), "assets", "--json"))
    keys = [a["key"] for a in listing["assets"]]
    assert keys == sorted(keys) and {CUSTOMERS, PROCESSED, SALES, USERS, GOLD, DASHBOARD, REPORT} <= set(keys)
    table = ok(world.env(), "assets", "--search", "customer")
    assert table.splitlines()[0].split() == ["KEY", "NAME", "OWNERS", "STATUS", "LAST", "MATERIALIZED"]
    assert PROCESSED in table and "Processed Customer Data" in table and DASHBOARD not in table
    owned = json.loads(ok(world.env(), "assets", "--owner", "bi-team", "--json"))
    assert [a["key"] for a in owned["assets"]] == [DASHBOARD]
    first = json.loads(ok(world.env(), "assets", "--limit", "2", "--json"))
    rest = json.loads(ok(world.env(), "assets", "--after", first["next_after"], "--json"))
    assert [a["key"] for a in first["assets"] + rest["assets"]] == keys


def test_show_prints_properties_last_run_and_metadata(world: Isolated) -> None:
    text = ok(world.env(), "show", PROCESSED)
    assert text.splitlines()[0] == PROCESSED
    assert field(text, "name") == "Processed Customer Data"
    assert field(text, "owners") == "data-team@company.com, alice@company.com"
    assert field(text, "last run") == "SUCCEEDED at 2025-01-01T00:00:20Z by task transform in flow analytics"
    assert field(text, "metadata") == '{"record_count": 1500} (from the last run)'
    assert field(text, "upstream (1)") == CUSTOMERS
    assert field(text, "downstream (0)") == "-"
    details = json.loads(ok(world.env(), "show", DASHBOARD, "--json"))
    assert details["properties"]["name"] == DASHBOARD_V2["name"] and details["properties"]["url"] is None
    failed = ok(world.env(), "show", GOLD)
    assert field(failed, "last run").startswith("FAILED at 2025-01-01T00:01:30Z by task gold")
    assert field(failed, "error") == "ValueError: negative revenue"


def test_show_and_lineage_as_of_a_time(world: Isolated) -> None:
    old = json.loads(ok(world.env(), "show", REPORT, "--as-of", at(120).isoformat(), "--json"))
    assert old["properties"]["url"] == REPORT_V1["url"] and old["upstream_count"] == 1
    old_text = ok(world.env(), "show", REPORT, "--as-of", "2025-01-01T00:02:00Z")
    assert field(old_text, "as of") == "2025-01-01T00:02:00Z" and field(old_text, "url") == REPORT_V1["url"]
    new = json.loads(ok(world.env(), "show", REPORT, "--as-of", "2025-01-01T00:05:00Z", "--json"))
    assert new["properties"]["url"] is None and new["upstream_count"] == 2
    before = json.loads(ok(world.env(), "lineage", REPORT, "--upstream", "--as-of", "2025-01-01 00:02", "--json"))
    assert [n["key"] for n in before["nodes"]] == [REPORT, SOURCE_A]
    after = json.loads(ok(world.env(), "lineage", REPORT, "--upstream", "--format", "json"))
    assert [n["key"] for n in after["nodes"]] == [REPORT, SOURCE_A, SOURCE_B]


def test_lineage_in_every_format(world: Isolated) -> None:
    table = ok(world.env(), "lineage", DASHBOARD, "--upstream")
    assert table.splitlines()[0].split() == ["HOPS", "KEY", "NAME", "STATUS", "LAST", "MATERIALIZED"]
    assert "up 3" in table and LOOKUP in table and "(5 assets, 4 edges)" in table
    graph = json.loads(ok(world.env(), "lineage", DASHBOARD, "--upstream", "--depth", "2", "--json"))
    assert [n["key"] for n in graph["nodes"]] == [DASHBOARD, GOLD, SILVER] and graph["truncated"] is False
    cut = json.loads(ok(world.env(), "lineage", DASHBOARD, "--upstream", "--limit", "2", "--json"))
    assert cut["truncated"] is True and len(cut["nodes"]) == 2
    assert "truncated at 2 assets" in ok(world.env(), "lineage", DASHBOARD, "--limit", "2")
    mermaid = ok(world.env(), "lineage", SILVER, "--format", "mermaid")
    assert mermaid.startswith("flowchart LR") and "-->" in mermaid and "-.->" in mermaid
    dot = ok(world.env(), "lineage", SILVER, "--format", "dot")
    assert dot.startswith("digraph lineage {") and f'"{LOOKUP}" -> "{SILVER}";' in dot


def test_history_pages_with_a_cursor_or_a_page_number(world: Isolated) -> None:
    first = json.loads(ok(world.env(), "history", REPORT, "--limit", "2", "--json"))
    assert [e["run"]["task_name"] for e in first["entries"]] == ["weekly", "weekly_refresh"]
    second = json.loads(ok(world.env(), "history", REPORT, "--limit", "2", "--before", first["next_cursor"],
                           "--json"))
    assert [e["metadata"] for e in second["entries"]] == [{"rows": 10}] and second["next_cursor"] is None
    assert json.loads(ok(world.env(), "history", REPORT, "--limit", "2", "--page", "2", "--json")) == second
    table = ok(world.env(), "history", REPORT, "--limit", "2")
    assert table.splitlines()[0].split()[:3] == ["TIME", "STATUS", "TASK"]
    assert f"--before {first['next_cursor']}" in table


@pytest.mark.parametrize("command", [["show"], ["lineage", "--downstream"], ["history"]])
def test_a_missing_key_is_one_line_and_exit_status_1(world: Isolated, command: list[str]) -> None:
    done = run(world.env(), command[0], "s3://nowhere/missing.csv", *command[1:])
    assert done.returncode == 1 and done.stdout == ""
    params = conninfo.conninfo_to_dict(world.dsn)
    where = f"{world.database!r} on {params.get('host')}:{params.get('port')}"  # names the database it read
    assert done.stderr.splitlines() == [
        f"assetlog: no asset 's3://nowhere/missing.csv' in database {where} "
        "(keys are exact; try `assetlog assets --search`)"]


def test_an_asset_not_yet_seen_at_the_as_of_time_is_exit_status_1(world: Isolated) -> None:
    done = run(world.env(), "show", SOURCE_B, "--as-of", "2025-01-01T00:02:00Z")
    assert done.returncode == 1 and "had not been seen yet" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, option", [
    (["lineage", DASHBOARD, "--depth", "0"], "--depth"),
    (["lineage", DASHBOARD, "--depth", "ten"], "--depth"),
    (["lineage", DASHBOARD, "--limit", "-5"], "--limit"),
    (["lineage", DASHBOARD, "--as-of", "last tuesday"], "--as-of"),
    (["show", DASHBOARD, "--as-of", "2025-13-45"], "--as-of"),
    (["history", DASHBOARD, "--before", "not-a-cursor"], "--before"),
    (["lineage", DASHBOARD, "--upstream", "--downstream"], "--downstream"),
])
def test_bad_options_are_usage_errors_with_exit_status_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                                         option: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_the_readonly_dsn_is_preferred(world: Isolated) -> None:
    as_reader = world.env(**{ENV_POSTGRES_READONLY_DSN: reader_dsn(world.dsn), ENV_POSTGRES_DSN: UNREACHABLE})
    assert json.loads(ok(as_reader, "show", PROCESSED, "--json"))["key"] == PROCESSED
    broken = run(world.env(**{ENV_POSTGRES_READONLY_DSN: UNREACHABLE}), "show", PROCESSED)
    assert broken.returncode == 1 and broken.stderr.startswith("assetlog: cannot reach PostgreSQL")
    assert len(broken.stderr.splitlines()) == 1


def test_no_dsn_at_all_is_a_configuration_error(world: Isolated) -> None:
    env = {k: v for k, v in world.env().items() if k not in (ENV_POSTGRES_DSN, ENV_POSTGRES_READONLY_DSN)}
    done = run(env, "assets")
    assert done.returncode == 2 and ENV_POSTGRES_READONLY_DSN in done.stderr and "Traceback" not in done.stderr
