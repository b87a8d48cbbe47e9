"""`LineageStore`: the read-only query API over the projection database.

Every connection it opens is read-only twice over (the session's default
transaction is READ ONLY, and each question runs in a READ ONLY, REPEATABLE
READ transaction, so a multi-query answer such as a lineage walk sees one
snapshot while consumers write), carries a statement_timeout, and works with
the least-privileged `assetlog_reader` role that `assetlog db migrate`
creates. Threads share a psycopg_pool pool (`pool_size > 1`); the CLI uses one
connection and pays no pool start-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import IsolationLevel, conninfo
from psycopg.errors import QueryCanceled
from psycopg_pool import ConnectionPool

from assetlog.config import ENV_POSTGRES_DSN, ENV_POSTGRES_READONLY_DSN, Settings
from assetlog.errors import ConfigError
from assetlog.projections.migrate import require_migrated
from assetlog.query import catalog, graph
from assetlog.query.catalog import AssetNotFound
from assetlog.query.graph import QueryTimeout
from assetlog.query.models import AssetDetails, AssetPage, Direction, HistoryPage, LineageGraph
from assetlog.query.timeparse import require_aware

DEFAULT_NODE_LIMIT = 1000
DEFAULT_STATEMENT_TIMEOUT = 10.0  # seconds
DEFAULT_NEIGHBOUR_LIMIT = 50
# A hot standby cancels a reader whose snapshot or locks hold up the replay of the primary's changes
# (a replay swap renames tables); the question is simply asked again on a fresh snapshot.
RECOVERY_CONFLICT_RETRIES = 5
RECOVERY_CONFLICT_BACKOFF = 0.05  # seconds, doubled after each conflict

T = TypeVar("T")

__all__ = ["AssetNotFound", "LineageStore", "QueryTimeout", "readonly_dsn"]


def readonly_dsn(settings: Settings) -> str:
    """The DSN queries use: ASSETLOG_POSTGRES_READONLY_DSN if set, else ASSETLOG_POSTGRES_DSN
    (still used read-only: every session and transaction is READ ONLY)."""
    if settings.postgres_readonly_dsn:
        return settings.postgres_readonly_dsn
    if settings.postgres_dsn:
        return settings.postgres_dsn
    raise ConfigError(
        f"neither {ENV_POSTGRES_READONLY_DSN} nor {ENV_POSTGRES_DSN} is set: start the local stack and run "
        '`eval "$(assetlog stack env)"`, or set one of them to a libpq connection string')


def _identity(conn: psycopg.Connection) -> tuple[str, int | None]:
    """(current_database(), the cluster's system identifier or None if this role may not read it).

    A streaming replica shares its primary's system identifier, so a reader DSN on a replica of
    the written database matches it; another cluster or another database on the same one does not.
    """
    name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    try:
        with conn.transaction():  # a savepoint: a refused EXECUTE must not abort the caller's transaction
            system = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]  # type: ignore[index]
    except psycopg.errors.InsufficientPrivilege:
        system = None
    return name, system


def require_same_database(reader: psycopg.Connection, writer_dsn: str) -> None:
    """Refuse a read-only DSN that reads another database than the consumers write (ConfigError).

    Compares what the servers report, not the DSN texts (other host names, users or a replica are
    fine). If the writer cannot be reached from here there is nothing to compare: the reader is
    trusted. If a role may not run pg_control_system(), only the database names are compared.
    """
    try:
        with psycopg.connect(writer_dsn, connect_timeout=5, application_name="assetlog.query.check") as writer:
            written = _identity(writer)
    except psycopg.OperationalError:
        return
    read = _identity(reader)
    same_cluster = read[1] is None or written[1] is None or read[1] == written[1]
    if read[0] != written[0] or not same_cluster:
        def describe(identity: tuple[str, int | None]) -> str:
            return f"database {identity[0]!r}" + (f" of cluster {identity[1]}" if identity[1] is not None else "")

        raise ConfigError(
            f"{ENV_POSTGRES_READONLY_DSN} reads {describe(read)} but {ENV_POSTGRES_DSN} writes "
            f"{describe(written)}: point the read-only DSN at the same database (or a streaming replica of it)")


class _Connections(Protocol):
    def connection(self) -> Any: ...  # a context manager yielding a configured connection
    def close(self) -> None: ...


class _SingleConnection:
    """One lazily opened connection, serialised by a lock, reopened if the server dropped it."""

    def __init__(self, dsn: str, configure: Any) -> None:
        self._dsn = dsn
        self._configure = configure
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self._dsn)
                self._configure(self._conn)
            yield self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class LineageStore:
    """Read-only questions about assets and their lineage; results are pydantic models.

    Use it as a context manager (or call `close()`). `as_of` arguments must be
    timezone-aware datetimes; with one, the answer comes from the append-only
    history as it stood at that moment.
    """

    def __init__(self, dsn: str, *, pool_size: int = 1, statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
                 node_limit: int = DEFAULT_NODE_LIMIT, application_name: str = "assetlog.query",
                 same_database_as: str | None = None) -> None:
        params = conninfo.conninfo_to_dict(dsn)
        params.setdefault("application_name", application_name)
        params.setdefault("connect_timeout", "10")  # an unreachable host fails in seconds, not minutes
        dsn = conninfo.make_conninfo(**params)
        self.statement_timeout = statement_timeout
        self.node_limit = node_limit
        self._same_database_as = same_database_as  # the writer's DSN, checked on the first question
        self._checked = False
        self.recovery_conflicts = 0  # questions a hot standby cancelled and that were asked again
        self._connections: _Connections
        if pool_size > 1:
            self._connections = ConnectionPool(dsn, min_size=1, max_size=pool_size, configure=self._configure,
                                               name="assetlog.query", open=True)
        else:
            self._connections = _SingleConnection(dsn, self._configure)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **options: Any) -> LineageStore:
        """A store on the read-only DSN of the environment (see `readonly_dsn`); when both DSNs are
        set, the first question refuses a read-only DSN on another database (`require_same_database`)."""
        settings = settings or Settings.from_env()
        if settings.postgres_readonly_dsn and settings.postgres_dsn:
            options.setdefault("same_database_as", settings.postgres_dsn)
        return cls(readonly_dsn(settings), **options)

    def close(self) -> None:
        self._connections.close()

    def __enter__(self) -> LineageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _configure(self, conn: psycopg.Connection) -> None:
        """Make a fresh connection read-only and time-bounded, whatever role it logged in as
        (and print times in UTC, like the events, whatever the server's zone).

        Without JIT: every read here is a few index lookups, which JIT compiles for longer than they run.
        The planner's cost of a walk's hop as of a time counts its history lookups for every row it might
        read, and passed `jit_above_cost`: 85-140 ms of compiling for a hop that ran in 1 ms
        (bench/README.md, "As-of walks from the edges")."""
        conn.autocommit = True
        conn.execute(
            "SELECT set_config('default_transaction_read_only', 'on', false), set_config('jit', 'off', false), "
            "set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false)",
            (f"{round(self.statement_timeout * 1000)}ms",),
        )
        conn.autocommit = False
        conn.read_only = True
        conn.isolation_level = IsolationLevel.REPEATABLE_READ

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection]:
        """One read-only snapshot; a cancelled statement becomes QueryTimeout."""
        try:
            with self._connections.connection() as conn, conn.transaction():
                if not self._checked:
                    if self._same_database_as:
                        require_same_database(conn, self._same_database_as)
                    require_migrated(conn)
                    self._checked = True
                yield conn
        except QueryCanceled:
            raise QueryTimeout(
                f"the query ran longer than the {self.statement_timeout:g}s statement timeout and was "
                "cancelled; narrow it (a smaller depth or limit)") from None

    def read(self, question: Callable[[psycopg.Connection], T]) -> T:
        """Answer `question(conn)` in one read-only snapshot, again if a hot standby cancelled it.

        Every question below goes through here; so do read-side helpers of other packages (the web
        view's token check), so that they share the store's connections and rules."""
        for attempt in range(RECOVERY_CONFLICT_RETRIES + 1):
            try:
                with self._reading() as conn:
                    return question(conn)
            except psycopg.Error as exc:
                if "conflict with recovery" not in str(exc) or attempt == RECOVERY_CONFLICT_RETRIES:
                    raise
                self.recovery_conflicts += 1
                time.sleep(RECOVERY_CONFLICT_BACKOFF * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- questions ---------------------------------------------------------------------------------

    def asset(self, key: str, *, as_of: datetime | None = None, neighbour_limit: int = DEFAULT_NEIGHBOUR_LIMIT,
              upstream_after: str | None = None, downstream_after: str | None = None) -> AssetDetails:
        """Properties, last materialization, latest metadata and direct neighbours of one asset.

        Neighbours come `neighbour_limit` at a time in key order; `upstream_after` / `downstream_after`
        continue a list after the last key shown (the counts are always complete).
        Raises AssetNotFound for an unknown key (or one first seen after `as_of`).
        """
        as_of = require_aware(as_of) if as_of is not None else None
        after = {"upstream": upstream_after, "downstream": downstream_after}
        return self.read(lambda conn: catalog.asset_details(conn, key, as_of, neighbour_limit, after))

    def lineage(self, key: str, *, direction: Direction = "both", depth: int | None = None,
                limit: int | None = None, as_of: datetime | None = None) -> LineageGraph:
        """Assets feeding `key` (upstream), fed by it (downstream), or both, up to `depth` hops
        (None: unlimited). At most `limit` nodes (default: the store's node_limit); a bigger
        answer is cut off with `truncated` set."""
        if direction not in ("upstream", "downstream", "both"):
            raise ValueError(f"direction must be upstream, downstream or both, not {direction!r}")
        as_of = require_aware(as_of) if as_of is not None else None
        def walk(conn: psycopg.Connection) -> LineageGraph:
            catalog.require_asset(conn, key, as_of)
            return graph.walk(conn, key, direction, depth, limit or self.node_limit, as_of,
                              budget_seconds=self.statement_timeout)

        return self.read(walk)

    def upstream(self, key: str, **options: Any) -> LineageGraph:
        """What feeds `key` (see `lineage`)."""
        return self.lineage(key, direction="upstream", **options)

    def downstream(self, key: str, **options: Any) -> LineageGraph:
        """What `key` feeds, i.e. what breaks if it changes (see `lineage`)."""
        return self.lineage(key, direction="downstream", **options)

    def subgraph(self, key: str, *, depth: int | None = 2, **options: Any) -> LineageGraph:
        """The neighbourhood of `key` in both directions (default two hops each way)."""
        return self.lineage(key, direction="both", depth=depth, **options)

    def history(self, key: str, *, limit: int = 20, before: str | None = None, offset: int = 0) -> HistoryPage:
        """Materializations of `key`, newest first. Page with `before=page.next_cursor` (stable while
        new runs arrive) or with `offset`. Raises AssetNotFound for an unknown key."""
        if limit < 1 or offset < 0:
            raise ValueError("limit must be at least 1 and offset at least 0")
        return self.read(lambda conn: catalog.history_page(conn, key, limit, before, offset))

    def search(self, text: str | None = None, *, owner: str | None = None, limit: int = 100,
               after: str | None = None) -> AssetPage:
        """Assets whose key, name, description or owners contain `text` (case-insensitive), owned by
        `owner` (exact match) when given, in key order; continue with `after=page.next_after`."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return self.read(lambda conn: catalog.search_assets(conn, text, owner, limit, after))
