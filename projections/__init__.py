"""What the tables mean: migrations and event -> SQL effects; no Kafka, no query API.

Projections never talk to Kafka: they are given validated events (with their
Kafka positions when there are some) and a database connection, and write
with set-based SQL in the caller's transaction. Reading the tables is
`assetlog.query`'s job; this package never imports it.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from assetlog.errors import AssetlogError
from assetlog.projections.base import Projection, table
from assetlog.projections.events import Event, InvalidEvent, Position, payload_json, to_event
from assetlog.projections.lineage import LineageEffects, LineageProjection
from assetlog.projections.migrate import (
    Migration,
    MigrationError,
    MigrationResult,
    migrate,
    require_migrated,
    schema_version,
    shipped_migrations,
)
from assetlog.projections.properties import PropertiesEffects, PropertiesProjection

PROJECTIONS: dict[str, type[PropertiesProjection] | type[LineageProjection]] = {
    PropertiesProjection.name: PropertiesProjection,
    LineageProjection.name: LineageProjection,
}
"""Projection classes by name: the names `assetlog consume NAME` accepts."""

# The tables each projection owns, and the bookkeeping tables; users query the first four.
PROJECTION_TABLES = {name: cls.tables for name, cls in PROJECTIONS.items()}
# Those plus the tables a projection keeps for itself (the lineage's event-id registry): a replay rebuilds
# and swaps these too, and compares only the first.
SWAPPED_TABLES = {name: (*cls.tables, *getattr(cls, "support_tables", ())) for name, cls in PROJECTIONS.items()}
BOOKKEEPING_TABLES = ("consumer_offsets", "dead_letters", "schema_migrations")


def projection_by_name(name: str, schema: str | None = None) -> PropertiesProjection | LineageProjection:
    """A projection instance by name; `schema` writes into that schema's tables (e.g. a shadow copy)."""
    try:
        return PROJECTIONS[name](schema)
    except KeyError:
        raise AssetlogError(f"no projection named {name!r}; choose one of: {', '.join(PROJECTIONS)}") from None


# Read-side names this package exported before they moved to `assetlog.query`:
# still reachable here for one release, with a DeprecationWarning, and imported
# only when asked for (projections must not depend on query).
_MOVED_TO_QUERY = frozenset({
    "AssetDetails", "AssetMetadata", "AssetNotFound", "AssetPage", "AssetProperties", "AssetSummary",
    "HistoryEntry", "HistoryPage", "LineageEdge", "LineageGraph", "LineageNode", "LineageStore",
    "MaterializationRun", "Neighbour", "QueryTimeout", "parse_time", "readonly_dsn",
})


def __getattr__(name: str) -> Any:
    if name not in _MOVED_TO_QUERY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"assetlog.projections.{name} moved to assetlog.query.{name}; the old path goes in the next "
                  "release", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module("assetlog.query"), name)


__all__ = [
    "BOOKKEEPING_TABLES",
    "PROJECTIONS",
    "PROJECTION_TABLES",
    "SWAPPED_TABLES",
    "Event",
    "InvalidEvent",
    "LineageEffects",
    "LineageProjection",
    "Migration",
    "MigrationError",
    "MigrationResult",
    "Position",
    "Projection",
    "PropertiesEffects",
    "PropertiesProjection",
    "migrate",
    "payload_json",
    "projection_by_name",
    "require_migrated",
    "schema_version",
    "shipped_migrations",
    "table",
    "to_event",
]
