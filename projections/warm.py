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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg
from psycopg import errors

from assetlog.errors import AssetlogError

# (relation, what reads it), most valuable first.
READ_PATH: tuple[tuple[str, str], ...] = (
    ("asset_edges_upstream", "downstream walks (covering index)"),
    ("asset_edges_downstream", "upstream walks (covering index)"),
    ("assets_pkey", "the answer's rows: status and time"),
    ("asset_properties_pkey", "the answer's rows: names"),
    ("assets", "the answer's rows: status and time"),
    ("asset_properties", "the answer's rows: names"),
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


def warm_read_path(conn: psycopg.Connection, share: float = 0.9) -> tuple[list[Warmed], float]:
    """Prewarm the read path's relations of the live schema into shared buffers (see the module
    docstring); returns what was loaded or skipped, and the size of shared_buffers in MiB."""
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
        ([relation for relation, _ in READ_PATH],)).fetchall()}
    missing = [relation for relation, _ in READ_PATH if relation not in found]
    if missing:
        raise WarmError(f"{missing[0]} is missing from this database: run `assetlog db migrate` first")
    sizes = [(relation, reads, int(found[relation][1]) // block_size) for relation, reads in READ_PATH]
    warmed = []
    for relation, reads, blocks, load in plan(sizes, int(buffers * share)):
        if load:
            conn.execute("SELECT pg_prewarm(%s::oid::regclass, 'buffer')", (found[relation][0],))
        warmed.append(Warmed(relation, reads, blocks, round(blocks * block_size / 2**20, 1), load))
    return warmed, round(buffers * block_size / 2**20, 1)
