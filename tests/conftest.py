"""Fixtures that put every test on the real Kafka broker and the real PostgreSQL.

The stack is the one the environment names (ASSETLOG_KAFKA_BOOTSTRAP,
ASSETLOG_POSTGRES_DSN) or the local one, started once per session. Each test
that asks for `isolated` gets its own topic prefix and its own database, so
tests never see each other's events nor a running demo's.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql

from assetlog.config import (
    ENV_KAFKA_BOOTSTRAP,
    ENV_OUTBOX_DIR,
    ENV_POSTGRES_DSN,
    ENV_TOPIC_PREFIX,
    Settings,
    state_home,
)
from assetlog.projections import migrate


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers `--numprocesses=auto` (the default in pyproject) starts.

    The suite mostly waits on the servers (polls, timeouts, process start-ups), so two workers
    halve it even on a 2-core machine; more than four would mostly add private drill stacks and
    Prefect servers competing for one broker and one PostgreSQL. `ASSETLOG_TEST_WORKERS` overrides
    (`-n 0` runs in one process, as `-p no:xdist` does).
    """
    wanted = os.environ.get("ASSETLOG_TEST_WORKERS")
    if wanted:
        return int(wanted)
    return min(4, max(2, os.cpu_count() or 1))


# Modules that start servers of their own (Prefect, a private broker and PostgreSQL) and run for
# 30-120 s each. Workers take whole modules (`--dist=loadfile`) in collection order, so these go
# first: if one came last, one worker would run it alone while the other sat idle.
LONGEST_MODULES = ("test_prefect_bridge", "test_prefect_parity", "test_fault_", "test_consumer_faults",
                   "test_secure_stack", "test_standby", "test_stack_lifecycle", "test_openlineage_export",
                   "test_replay_swap", "test_replay_check", "test_replay_cli")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the longest modules first (a stable sort: the order inside a module is kept)."""
    def longest_first(item: pytest.Item) -> int:
        return 0 if item.path.stem.startswith(LONGEST_MODULES) else 1

    items.sort(key=longest_first)


@dataclass(frozen=True)
class StackEndpoints:
    bootstrap: str
    admin_dsn: str  # a DSN with rights to create databases


@pytest.fixture(scope="session")
def stack() -> StackEndpoints:
    bootstrap = os.environ.get(ENV_KAFKA_BOOTSTRAP)
    dsn = os.environ.get(ENV_POSTGRES_DSN)
    if not bootstrap or not dsn:
        from assetlog.compose.stack import LocalStack

        local = LocalStack.default()
        local.up()
        env = local.env()
        bootstrap, dsn = env[ENV_KAFKA_BOOTSTRAP], env[ENV_POSTGRES_DSN]
    endpoints = StackEndpoints(bootstrap=bootstrap, admin_dsn=dsn)
    sweep_orphan_test_databases(endpoints)  # first: their topics are then orphans too
    sweep_orphan_test_topics(endpoints)
    return endpoints


# No test keeps its database this long: one older than this that nobody is connected to was left by a
# run that ended without its clean-up.
ORPHAN_DATABASE_AGE = "6 hours"


def sweep_orphan_test_databases(stack: StackEndpoints, older_than: str = ORPHAN_DATABASE_AGE,
                                only: list[str] | None = None) -> list[str]:
    """Drop the test databases of runs that ended without their clean-up (killed, timed out).

    A database's age is that of its PG_VERSION file, written once when it was created. Nobody may be
    connected: a database in use is never dropped, whatever its age. A role that may not read the
    file's age (not a superuser, on servers of one's own) sweeps nothing. (`only` limits the sweep to
    those names: its own test sweeps with no age, beside other tests' databases.)
    """
    with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
        try:
            old = [row[0] for row in conn.execute(
                "SELECT datname FROM pg_database d WHERE datname ~ '^assetlog_test_[0-9a-f]{10}$' "
                "AND (%(only)s::text[] IS NULL OR datname = ANY(%(only)s)) "
                "AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification < now() - %(age)s::interval "
                "AND NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.datid = d.oid)",
                {"only": only, "age": older_than})]
        except psycopg.errors.InsufficientPrivilege:
            return []
        dropped = []
        for name in old:
            try:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                dropped.append(name)
            except psycopg.errors.ObjectInUse:  # someone connected since: not an orphan after all
                pass
    return dropped


TEST_TOPIC = re.compile(r"^test\.([0-9a-f]{10})(?:\.|$)")


def sweep_orphan_test_topics(stack: StackEndpoints) -> list[str]:
    """Delete the topics of test runs that ended without their clean-up (killed, timed out).

    A test's prefix `test.<suffix>` lives exactly as long as its database `assetlog_test_<suffix>`:
    `create_isolated` creates the database before the topics, `drop_isolated` drops it before them. So
    topics whose database is gone belong to no running test, also not to another run on the same
    servers, and deleting them is safe. Left alone, they pile up until the broker's start is slow.
    """
    from assetlog.topics import admin_client, delete_topic_names

    settings = replace(Settings.from_env({}), kafka_bootstrap=stack.bootstrap)
    admin = admin_client(settings)
    names = admin.list_topics(timeout=30).topics
    with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
        databases = {row[0] for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'assetlog\\_test\\_%'")}
    orphans = [name for name in names
               if (match := TEST_TOPIC.match(name)) and f"assetlog_test_{match.group(1)}" not in databases]
    delete_topic_names(admin, orphans, timeout=60)  # another worker's sweep may delete some first
    return orphans


def dsn_for_database(dsn: str, database: str) -> str:
    params = conninfo.conninfo_to_dict(dsn)
    params["dbname"] = database
    return conninfo.make_conninfo(**params)


def dsn_as_role(dsn: str, role: str) -> str:
    """The same database as `role`, with no password: the local stack trusts its roles on 127.0.0.1."""
    params = conninfo.conninfo_to_dict(dsn)
    params.pop("password", None)
    params["user"] = role
    return conninfo.make_conninfo(**params)


@dataclass(frozen=True)
class Isolated:
    """One test's own world: topic prefix, database and outbox on the shared servers."""

    settings: Settings
    database: str

    @property
    def dsn(self) -> str:
        assert self.settings.postgres_dsn
        return self.settings.postgres_dsn

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (the CLI, a worker) that must see the same world."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETLOG_")}
        env.update({
            ENV_KAFKA_BOOTSTRAP: self.settings.kafka_bootstrap or "",
            ENV_POSTGRES_DSN: self.dsn,
            ENV_TOPIC_PREFIX: self.settings.topic_prefix,
            ENV_OUTBOX_DIR: str(self.settings.outbox_dir),
            # consumer slot locks (and any other state) under the test's own folder, not the user's
            "XDG_STATE_HOME": str(self.settings.consumer_lock_dir.parent.parent),
        })
        env.update(extra)
        return env


def create_isolated(stack: StackEndpoints, outbox_dir: Path, partitions: int = 3) -> Isolated:
    from assetlog.topics import ensure_topics

    suffix = uuid.uuid4().hex[:10]
    database = f"assetlog_test_{suffix}"
    with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    settings = replace(
        Settings.from_env({}),
        kafka_bootstrap=stack.bootstrap,
        postgres_dsn=dsn_for_database(stack.admin_dsn, database),
        topic_prefix=f"test.{suffix}",
        outbox_dir=outbox_dir,
        consumer_lock_dir=state_home({"XDG_STATE_HOME": str(outbox_dir.with_name(f"{outbox_dir.name}-state"))})
        / "consumers",
    )
    ensure_topics(settings, partitions=partitions)
    return Isolated(settings=settings, database=database)


def drop_role(dsn: str, role: str) -> None:
    """Drop a role a test created, after handing what it owns in this database to the caller."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def drop_isolated(stack: StackEndpoints, isolated: Isolated) -> None:
    from assetlog.topics import delete_topics_under

    with psycopg.connect(stack.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(isolated.database)))
    # Every topic under the test's prefix, not only the six event topics: tests that make more
    # (`<prefix>.<tail>.*`, OpenLineage topics) leaked them, and the broker's start-up slowed with each run.
    delete_topics_under(isolated.settings)


@pytest.fixture
def isolated(stack: StackEndpoints, tmp_path: Path) -> Iterator[Isolated]:
    """A fresh topic prefix (3 partitions per topic), database and outbox for one test."""
    world = create_isolated(stack, tmp_path / "outbox")
    try:
        yield world
    finally:
        drop_isolated(stack, world)


@pytest.fixture
def migrated_connection(isolated: Isolated) -> Iterator[psycopg.Connection]:
    """A connection to the isolated database, migrated (for projection tests without Kafka)."""
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn) as connection:
        yield connection
