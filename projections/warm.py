"""Load the pages the read path needs into PostgreSQL's buffer cache (`assetlog db warm`).

A lineage walk at 10M edges reads a few thousand pages of the two covering edge
indexes and a thousand primary-key lookups in `assets` and `asset_properties`
(bench/README.md, "Graph at 10M edges"). Cached, a walk takes tens of
milliseconds; a walk whose pages must come from disk took up to 2 s, since
every page read waits for the device. After a restart, a replay swap (its
tables are new relations, with nothing cached) or a day of other work in the
page cache, the first users pay that. `pg_prewarm` reads the relations once, in
a known order, into shared buffers, where the OS cannot reclaim them.

The order is the walk's priority: the edge indexes every hop reads, then the
key lookups of the answer's rows, then those tables' heaps. Warming stops
before the total passes the cache's share given to it (by default 90% of
`shared_buffers`), since what is read past that only evicts what was read
first; what was left out is reported, not silently dropped.

A replay warms what its swap brought in (`warm_or_say_why`, after the swap
committed): the same order and budget, restricted to the swapped tables'
relations, and never an error, since the replay itself has already succeeded.
When queries read a hot standby, the replay warms it too, once it has replayed
the swap (`warm_standby_or_say_why`).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import errors

from assetlog.errors import AssetlogError

# (relation, its table, what reads it), most valuable first.
READ_PATH: tuple[tuple[str, str, str], ...] = (
    ("asset_edges_upstream", "asset_edges", "downstream walks (covering index)"),
    ("asset_edges_downstream", "asset_edges", "upstream walks (covering index)"),
    ("assets_key_hash", "assets", "the answer's rows: status and time"),
    ("asset_properties_key_hash", "asset_properties", "the answer's rows: names"),
    ("assets", "assets", "the answer's rows: status and time"),
    ("asset_properties", "asset_properties", "the answer's rows: names"),
)


class WarmError(AssetlogError):
    """The database cannot warm its cache (pg_prewarm missing or not allowed)."""


@dataclass(frozen=True)
class Warmed:
    relation: str
    reads: str
    blocks: int
    mib: float
    loaded: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ensure_prewarm(conn: psycopg.Connection) -> None:
    """Create the pg_prewarm extension if it is not there; one clear line if that is not possible."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm'").fetchone():
        return
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    except (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction) as exc:
        why = "this connection is read-only" if isinstance(exc, errors.ReadOnlySqlTransaction) else \
            "this role may not create it"
        raise WarmError(f"the pg_prewarm extension is not installed in this database and {why}: run "
                        "`CREATE EXTENSION pg_prewarm` on the primary as a superuser (a standby gets it from there)"
                        ) from None
    except (errors.UndefinedFile, errors.FeatureNotSupported) as exc:
        raise WarmError(f"this PostgreSQL server has no pg_prewarm extension (part of its contrib modules): "
                        f"{str(exc).splitlines()[0]}") from None


def plan(sizes: list[tuple[str, str, int]], budget_blocks: int) -> list[tuple[str, str, int, bool]]:
    """Which relations fit the budget, in the given order: (relation, reads, blocks, load it). A relation
    that does not fit is skipped, and smaller ones after it may still fit."""
    chosen = []
    used = 0
    for relation, reads, blocks in sizes:
        fits = used + blocks <= budget_blocks
        if fits:
            used += blocks
        chosen.append((relation, reads, blocks, fits))
    return chosen


def warm_read_path(conn: psycopg.Connection, share: float = 0.9,
                   tables: Collection[str] | None = None) -> tuple[list[Warmed], float]:
    """Prewarm the read path's relations of the live schema into shared buffers (see the module
    docstring); returns what was loaded or skipped, and the size of shared_buffers in MiB.

    With `tables`, only the relations of those tables (the tables themselves and their indexes) are
    loaded and returned: what a replay swapped in. The others still count against the budget in
    their place in the order, as they are taken to be cached already (the replay did not replace
    them), so a rebuilt table never crowds out a relation that comes before it."""
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")
    ensure_prewarm(conn)
    row = conn.execute("SELECT setting::bigint, current_setting('block_size')::bigint FROM pg_settings "
                       "WHERE name = 'shared_buffers'").fetchone()
    assert row is not None
    buffers, block_size = int(row[0]), int(row[1])
    # One query for every relation: its oid (what pg_prewarm takes, no name to quote) and its size.
    found = {name: (oid, size) for name, oid, size in conn.execute(
        "SELECT c.relname, c.oid, pg_relation_size(c.oid) FROM pg_class c "
        "WHERE c.relname = ANY(%s) AND c.relnamespace = current_schema()::regnamespace",
        ([relation for relation, *_ in READ_PATH],)).fetchall()}
    missing = [relation for relation, *_ in READ_PATH if relation not in found]
    if missing:
        raise WarmError(f"{missing[0]} is missing from this database: run `assetlog db migrate` first")
    sizes = [(relation, reads, int(found[relation][1]) // block_size) for relation, _, reads in READ_PATH]
    wanted = read_path_of(tables)
    warmed = []
    for relation, reads, blocks, load in plan(sizes, int(buffers * share)):
        if relation not in wanted:
            continue
        if load:
            conn.execute("SELECT pg_prewarm(%s::oid::regclass, 'buffer')", (found[relation][0],))
        warmed.append(Warmed(relation, reads, blocks, round(blocks * block_size / 2**20, 1), load))
    return warmed, round(buffers * block_size / 2**20, 1)


def summary(warmed: list[Warmed], buffers_mib: float) -> dict[str, Any]:
    """What a warm did, as `--json` reports it (`db warm`, and a replay's `warm`)."""
    return {"relations": [w.as_dict() for w in warmed], "shared_buffers_mib": buffers_mib,
            "loaded_mib": round(sum(w.mib for w in warmed if w.loaded), 1),
            "skipped": [w.relation for w in warmed if not w.loaded]}


def read_path_of(tables: Collection[str] | None) -> list[str]:
    """The read path's relations that belong to `tables` (all of them for None), by name: the
    relations a warm of those tables would load, for saying what was not warmed."""
    return [relation for relation, table, _ in READ_PATH if tables is None or table in tables]


def warm_or_say_why(dsn: str, tables: Collection[str] | None = None, timeout: float = 120.0, *,
                    replayed_to: str | None = None) -> dict[str, Any]:
    """Warm like `assetlog db warm` (only `tables`' relations, see `warm_read_path`) on a connection
    of its own, for a caller whose own work has already succeeded: never raises a database error.
    Returns `summary()` plus `warmed: true` and the seconds it took, or `warmed: false`, the reason in
    one line and the relations it did not warm. `timeout` bounds each statement, so a lock held on
    a table (a migration) or a slow disk stops the warm instead of holding the caller.

    With `replayed_to` (a WAL position of the primary), `dsn` is a standby's: the warm first waits,
    within `timeout`, until the standby has replayed that far, since before then it still holds the
    tables the swap replaced."""
    started = time.monotonic()
    try:
        with psycopg.connect(dsn, autocommit=True, application_name="assetlog.warm",
                             connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{max(1, int(timeout * 1000))}ms",))
            if replayed_to is not None:
                wait_for_replay(conn, replayed_to, timeout)
            warmed, buffers_mib = warm_read_path(conn, tables=tables)
    except WarmError as exc:
        reason = str(exc)
    except errors.QueryCanceled as exc:
        reason = f"loading a relation took longer than {timeout:g}s (a lock held on it, or a slow disk?)" \
            if "statement timeout" in str(exc) else str(exc).strip().splitlines()[0]
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    else:
        return {"warmed": True, **summary(warmed, buffers_mib), "seconds": round(time.monotonic() - started, 3)}
    return not_warmed(reason, tables)


def warm_standby_or_say_why(primary_dsn: str, standby_dsn: str, tables: Collection[str] | None = None,
                            timeout: float = 120.0) -> dict[str, Any] | None:
    """After a swap on the primary, warm the same relations on the standby that queries read
    (ASSETLOG_POSTGRES_READONLY_DSN): the standby replays the swap as new relations too, with nothing
    of them in its own shared buffers. None when that DSN is not a standby (it reads the primary, which
    was warmed already); else `warm_or_say_why`'s report, never an error."""
    try:
        with psycopg.connect(standby_dsn, autocommit=True, connect_timeout=max(1, round(timeout))) as standby:
            row = standby.execute("SELECT pg_is_in_recovery()").fetchone()
            if not (row and row[0]):
                return None
        with psycopg.connect(primary_dsn, autocommit=True, connect_timeout=max(1, round(timeout))) as primary:
            position = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    except psycopg.Error as exc:
        return not_warmed((str(exc).strip().splitlines() or [type(exc).__name__])[0], tables)
    assert position is not None
    return warm_or_say_why(standby_dsn, tables, timeout, replayed_to=str(position[0]))


def wait_for_replay(conn: psycopg.Connection, position: str, timeout: float) -> None:
    """Wait until this standby has replayed the primary's WAL up to `position`; WarmError past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (position,)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            raise WarmError(f"the standby had not replayed the primary's WAL up to {position} within {timeout:g}s "
                            "(is it streaming?)")
        time.sleep(0.05)


def not_warmed(reason: str, tables: Collection[str] | None = None) -> dict[str, Any]:
    """The report of a warm that did not happen: why, and which relations it would have loaded."""
    return {"warmed": False, "reason": reason, "not_warmed": read_path_of(tables)}
