"""The read side: the query API (`LineageStore`), its models, "as of" queries, and the query CLI.

It reads the projection tables and nothing else: it never writes a table and never
talks to Kafka, so it can run on a read-only role or a standby.
"""

from assetlog.query.catalog import AssetNotFound
from assetlog.query.graph import QueryTimeout
from assetlog.query.models import (
    AssetDetails,
    AssetMetadata,
    AssetPage,
    AssetProperties,
    AssetSummary,
    Direction,
    HistoryEntry,
    HistoryPage,
    LineageEdge,
    LineageGraph,
    LineageNode,
    MaterializationRun,
    Neighbour,
)
from assetlog.query.store import LineageStore, readonly_dsn
from assetlog.query.timeparse import parse_time, require_aware

__all__ = [
    "AssetDetails",
    "AssetMetadata",
    "AssetNotFound",
    "AssetPage",
    "AssetProperties",
    "AssetSummary",
    "Direction",
    "HistoryEntry",
    "HistoryPage",
    "LineageEdge",
    "LineageGraph",
    "LineageNode",
    "LineageStore",
    "MaterializationRun",
    "Neighbour",
    "QueryTimeout",
    "parse_time",
    "readonly_dsn",
    "require_aware",
]
