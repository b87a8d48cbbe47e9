"""What every benchmark sets up the same way: a scratch database and topic prefix of its own.

A benchmark runs against the stack the environment names (`eval "$(assetlog
stack env)"`) beside whatever else uses it, so it works in a database and under
a topic prefix made for this run only (`bench.<random>`), with an outbox folder
of its own, and drops all of them when it ends, however it ends (`scratch`).
The graph benchmarks load a big graph once and keep it for the next run, in a
database they name (`kept_database`, `kept_database_dsn`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import psycopg
from confluent_kafka.admin import NewTopic
from psycopg import conninfo, sql

from assetlog.config import (
    ENV_KAFKA_BOOTSTRAP,
    ENV_OUTBOX_DIR,
    ENV_POSTGRES_DSN,
    ENV_TOPIC_PREFIX,
    Settings,
)
from assetlog.projections import migrate
from assetlog.projections.partitions import list_partitions
from assetlog.topics import admin_client, delete_topics_under, ensure_topics


@dataclass
class Scratch:
    """This run's settings (own database, topic prefix and outbox), and the topics to delete at the end."""

    settings: Settings
    admin_dsn: str
    workdir: Path
    _made_topics: bool = False  # only then is Kafka needed to clean up

    @property
    def dsn(self) -> str:
        return self.settings.postgres_dsn or ""

    @property
    def database(self) -> str:
        return conninfo.conninfo_to_dict(self.dsn)["dbname"] or ""

    @contextmanager
    def database_copy(self, tail: str) -> Iterator[str]:
        """A database `<this run's>_<tail>` copied from this run's (migrated, empty) one; its DSN; dropped after."""
        name = f"{self.database}_{tail}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                           sql.Identifier(self.database)))
        try:
            yield conninfo.make_conninfo(self.dsn, dbname=name)
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def event_topics(self, prefix_tail: str | None = None, partitions: int = 3) -> Settings:
        """Create the event topics under this run's prefix (or `<prefix>.<prefix_tail>`); their settings."""
        settings = self.settings if prefix_tail is None else replace(
            self.settings, topic_prefix=f"{self.settings.topic_prefix}.{prefix_tail}")
        settings.require_kafka()
        self._made_topics = True
        ensure_topics(settings, partitions=partitions)
        return settings

    def plain_topic(self, tail: str, partitions: int = 3) -> str:
        """A topic `<prefix>.<tail>` with the broker's default settings (for a baseline's own traffic)."""
        self.settings.require_kafka()
        name = f"{self.settings.topic_prefix}.{tail}"
        self._made_topics = True
        admin = admin_client(self.settings)  # held: the futures fail if the client is destroyed first
        for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=-1)]).values():
            future.result()
        return name

    def _clean_up(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.database)))
        if self._made_topics:  # everything under the run's prefix, also what its subprocesses made
            delete_topics_under(self.settings)
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def scratch(tag: str, *, migrated: bool = True) -> Iterator[Scratch]:
    """A fresh database (migrated unless told otherwise) and topic prefix, dropped on the way out.

    The event topics are made by `Scratch.event_topics`, so a benchmark chooses their partitions
    (and may make several prefixes); everything made through the Scratch is deleted at the end.
    """
    base = Settings.from_env()
    admin_dsn = base.require_postgres()
    suffix = uuid.uuid4().hex[:8]
    database = f"assetlog_bench_{suffix}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    params = conninfo.conninfo_to_dict(admin_dsn)
    params["dbname"] = database
    workdir = Path(tempfile.mkdtemp(prefix=f"assetlog-{tag}-"))
    run = Scratch(replace(base, topic_prefix=f"bench.{suffix}", postgres_dsn=conninfo.make_conninfo(**params),
                          outbox_dir=workdir / "outbox"), admin_dsn, workdir)
    try:
        if migrated:
            migrate(run.dsn)
        yield run
    finally:
        run._clean_up()


Loaded = TypeVar("Loaded")


def kept_database_dsn(name: str, user: str | None = None) -> str:
    """The DSN of database `name` on the server the environment names (as `user`, without the
    environment's password, when given: e.g. the read-only role)."""
    params = conninfo.conninfo_to_dict(Settings.from_env().require_postgres())
    params["dbname"] = name
    if user is not None:
        params.update(user=user)
        params.pop("password", None)
    return conninfo.make_conninfo(**params)


def kept_database(name: str, signature: str, load: Callable[[str], Loaded], *,
                  reuse: bool, migrate_kept: bool = True) -> tuple[str, Loaded | None]:
    """A database `name` kept between runs, so a big graph is loaded once; its DSN, and what `load`
    returned (None when reused).

    With `reuse`, a database whose comment is `signature` (what was loaded into it) is kept as it
    is, with the migrations shipped since applied (unless not `migrate_kept`: a database whose
    schema was set up by hand); otherwise it is made afresh: dropped if it
    exists, created, migrated, filled by `load(dsn)`, VACUUM ANALYZEd (what autovacuum would have
    done on a live database) and labelled `signature`. Nothing here drops it afterwards.
    """
    dsn = kept_database_dsn(name)
    with psycopg.connect(Settings.from_env().require_postgres(), autocommit=True) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (name,)).fetchone()
        if reuse and row and row[0] == signature:
            if migrate_kept:
                migrate(dsn)
            return dsn, None
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        migrate(dsn)
        loaded = load(dsn)
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("VACUUM ANALYZE")
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(signature)))
    return dsn, loaded


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of an `assetlog` child process that uses `settings` (and none of ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETLOG_")}
    env.update({ENV_KAFKA_BOOTSTRAP: settings.kafka_bootstrap or "", ENV_POSTGRES_DSN: settings.postgres_dsn or "",
                ENV_TOPIC_PREFIX: settings.topic_prefix, ENV_OUTBOX_DIR: str(settings.outbox_dir)})
    return env


def empty_projection_tables(dsn: str) -> None:
    """Empty every projection table and the consumers' offsets, so the same events project again as into a
    new deployment. The history and each of its partitions refuse TRUNCATE: that is lifted for this reset
    only. The event-id registry is emptied too, or every event would be skipped as a redelivery."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM consumer_offsets")
        conn.execute("TRUNCATE assets, asset_properties, asset_edges, lineage_event_ids")
        protected = ["lineage_history", *(p.name for p in list_partitions(conn, "public"))]
        with conn.transaction():
            for name in protected:
                conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER lineage_history_no_truncate").format(
                    sql.Identifier(name)))
            conn.execute("TRUNCATE lineage_history")
            for name in protected:
                conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER lineage_history_no_truncate").format(
                    sql.Identifier(name)))
