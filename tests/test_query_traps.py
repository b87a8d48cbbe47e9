"""Small traps of the read side: a read-only DSN on another database, and bidi controls in keys.

The read-only DSN is compared by what the servers report (current_database()
and the cluster's system identifier, which a streaming replica shares with
its primary), so other host names, other users or a replica still pass, and
a second real database on the same server is refused. Bidi controls in a key
are shown as `\\u202e`, never applied, in every CLI rendering.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from conftest import Isolated, StackEndpoints, create_isolated, drop_isolated, dsn_for_database
from events_factory import Asset, TaskRun, Upstream
from psycopg import conninfo, sql
from query_world import project, reader_dsn

from assetlog.config import ENV_POSTGRES_DSN, ENV_POSTGRES_READONLY_DSN, Settings
from assetlog.errors import ConfigError
from assetlog.projections import migrate
from assetlog.query.store import LineageStore

RLO = "\u202e"
BIDI_KEY = f"s3://bidi/report{RLO}vsc.exe"  # shows as s3://bidi/reportexe.csv when the override is applied
BIDI_NAME = f"Q3 {RLO}tropeR\u2066x\u2069 \u200f"
PLAIN = "s3://bidi/plain.csv"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def other_database(isolated: Isolated) -> Iterator[str]:
    """A second, migrated database on the same server, with the same key projected."""
    name = f"{isolated.database}_other"
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = dsn_for_database(isolated.dsn, name)
        project(dsn, [TaskRun([PLAIN])])
        yield dsn
    finally:
        with psycopg.connect(isolated.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_readonly_dsn_on_another_database_is_refused_at_start(isolated: Isolated, other_database: str) -> None:
    project(isolated.dsn, [TaskRun([PLAIN])])
    env = isolated.env(**{ENV_POSTGRES_READONLY_DSN: reader_dsn(other_database)})
    for command in (["show", PLAIN], ["assets"], ["serve", "--port", "0"]):
        done = run(env, *command)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stdout == ""
        other = conninfo.conninfo_to_dict(other_database)["dbname"]
        assert done.stderr.splitlines() == [
            f"assetlog: {ENV_POSTGRES_READONLY_DSN} reads database {other!r} of cluster {_system(isolated.dsn)} "
            f"but {ENV_POSTGRES_DSN} writes database {isolated.database!r} of cluster {_system(isolated.dsn)}: "
            "point the read-only DSN at the same database (or a streaming replica of it)"], command


def test_the_same_database_through_other_dsn_text_is_accepted(isolated: Isolated) -> None:
    project(isolated.dsn, [TaskRun([PLAIN])])
    # Another user, another spelling of the host, extra options: the server says it is the same database.
    params = conninfo.conninfo_to_dict(reader_dsn(isolated.dsn))
    params.update(host="localhost" if params.get("host") == "127.0.0.1" else params.get("host"),
                  options="-c search_path=public")
    env = isolated.env(**{ENV_POSTGRES_READONLY_DSN: conninfo.make_conninfo(**params)})
    done = run(env, "show", PLAIN, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["key"] == PLAIN


def test_the_check_is_part_of_the_query_api(isolated: Isolated, other_database: str) -> None:
    migrate(isolated.dsn)
    settings = Settings(postgres_dsn=isolated.dsn, postgres_readonly_dsn=reader_dsn(other_database))
    with LineageStore.from_settings(settings) as store, pytest.raises(ConfigError, match="reads database"):
        store.search()
    unreachable_writer = Settings(postgres_dsn="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2",
                                  postgres_readonly_dsn=reader_dsn(other_database))
    with LineageStore.from_settings(unreachable_writer) as store:  # nothing to compare with: trusted
        assert [a.key for a in store.search().assets] == [PLAIN]


def _system(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]


# --- bidi controls --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bidi_world(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    world = create_isolated(stack, tmp_path_factory.mktemp("outbox"))
    try:
        project(world.dsn, [TaskRun([Asset(BIDI_KEY, {"name": BIDI_NAME, "description": None,
                                                      "owners": [f"o{RLO}x"], "url": None})],
                                    [Upstream(PLAIN, "EXPLICIT", None)], metadata={BIDI_KEY: {f"k{RLO}": f"v{RLO}"}})])
        yield world
    finally:
        drop_isolated(stack, world)


@pytest.mark.parametrize("command", [
    ["assets"], ["assets", "--json"], ["show", BIDI_KEY], ["show", BIDI_KEY, "--json"],
    ["history", BIDI_KEY], ["history", BIDI_KEY, "--json"],
    ["lineage", PLAIN], ["lineage", PLAIN, "--json"], ["lineage", PLAIN, "--format", "mermaid"],
    ["lineage", PLAIN, "--format", "dot"],
])
def test_bidi_controls_are_shown_not_applied_on_the_cli(bidi_world: Isolated, command: list[str]) -> None:
    done = run(bidi_world.env(), *command)
    assert done.returncode == 0, done.stderr
    hidden = [c for c in done.stdout if c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]
    assert hidden == [], f"{command}: {hidden}"
    if "--json" in command:  # the same data, as JSON escapes
        assert BIDI_KEY in json.dumps(json.loads(done.stdout), ensure_ascii=False)
    elif command[0] != "history":  # history's table lists runs, not keys
        assert "report\\u202evsc.exe" in done.stdout, done.stdout
