"""What the PostgreSQL tables mean: migrations, event -> SQL effects, read-only queries.

Projections never talk to Kafka: they are given validated events (with their
Kafka positions when there are some) and a database connection, and write
with set-based SQL in the caller's transaction.
"""

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
from assetlog.projections.models import (
    AssetDetails,
    AssetMetadata,
    AssetPage,
    AssetProperties,
    AssetSummary,
    HistoryEntry,
    HistoryPage,
    LineageEdge,
    LineageGraph,
    LineageNode,
    MaterializationRun,
    Neighbour,
)
from assetlog.projections.properties import PropertiesEffects, PropertiesProjection
from assetlog.projections.store import AssetNotFound, LineageStore, QueryTimeout, readonly_dsn
from assetlog.projections.timeparse import parse_time

PROJECTIONS: dict[str, type[PropertiesProjection] | type[LineageProjection]] = {
    PropertiesProjection.name: PropertiesProjection,
    LineageProjection.name: LineageProjection,
}
"""Projection classes by name: the names `assetlog consume NAME` accepts."""

# The tables each projection owns, and the bookkeeping tables; users query the first four.
PROJECTION_TABLES = {name: cls.tables for name, cls in PROJECTIONS.items()}
BOOKKEEPING_TABLES = ("consumer_offsets", "dead_letters", "schema_migrations")


def projection_by_name(name: str, schema: str | None = None) -> PropertiesProjection | LineageProjection:
    """A projection instance by name; `schema` writes into that schema's tables (e.g. a shadow copy)."""
    try:
        return PROJECTIONS[name](schema)
    except KeyError:
        from assetlog.errors import AssetlogError

        raise AssetlogError(f"no projection named {name!r}; choose one of: {', '.join(PROJECTIONS)}") from None


__all__ = [
    "BOOKKEEPING_TABLES",
    "AssetDetails",
    "AssetMetadata",
    "AssetNotFound",
    "AssetPage",
    "AssetProperties",
    "AssetSummary",
    "HistoryEntry",
    "HistoryPage",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "LineageStore",
    "MaterializationRun",
    "Neighbour",
    "QueryTimeout",
    "readonly_dsn",
    "parse_time",
    "PROJECTIONS",
    "PROJECTION_TABLES",
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
