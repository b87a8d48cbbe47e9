"""The properties projection: `asset_properties` (last write wins) and `assets`.

Events of the three topics arrive in no global order (three topics, several
partitions, several consumer processes), so every column is defined by an
order-independent rule over the set of events:

- properties: the properties of the event with the greatest (event_time,
  event_id) among materializations carrying `properties` and dependencies
  carrying `upstream_properties`; replaced as a whole; events without
  properties never touch them;
- first_seen / last_seen: min / max event_time of any event naming the key;
- last materialization: the materialization with the greatest (event_time, event_id);
- metadata: the metadata event with the greatest (event_time,
  materialization_event_id, event_id).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from assetlog.projections.base import copy_to_temp, staged_select, table
from assetlog.projections.events import Event
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA

PROPERTIES_COLUMNS = (
    ("key", "text"), ("name", "text"), ("description", "text"), ("owners", "text[]"), ("url", "text"),
    ("event_time", "timestamptz"), ("event_id", "uuid"),
)
ASSETS_COLUMNS = (
    ("key", "text"), ("first_seen", "timestamptz"), ("last_seen", "timestamptz"),
    ("last_materialized_at", "timestamptz"), ("last_materialization_event_id", "uuid"), ("last_status", "text"),
    ("last_materialized_by", "text"), ("last_error_type", "text"), ("last_error_message", "text"),
    ("metadata", "jsonb"), ("metadata_time", "timestamptz"), ("metadata_materialization_event_id", "uuid"),
    ("metadata_event_id", "uuid"),
)
MATERIALIZATION_COLUMNS = ("last_materialized_at", "last_materialization_event_id", "last_status",
                           "last_materialized_by", "last_error_type", "last_error_message")
METADATA_COLUMNS = ("metadata", "metadata_time", "metadata_materialization_event_id", "metadata_event_id")

_NEWER_MATERIALIZATION = sql.SQL(
    "(EXCLUDED.last_materialized_at IS NOT NULL AND (t.last_materialized_at IS NULL OR "
    "(EXCLUDED.last_materialized_at, EXCLUDED.last_materialization_event_id) "
    "> (t.last_materialized_at, t.last_materialization_event_id)))"
)
_NEWER_METADATA = sql.SQL(
    "(EXCLUDED.metadata_event_id IS NOT NULL AND (t.metadata_event_id IS NULL OR "
    "(EXCLUDED.metadata_time, EXCLUDED.metadata_materialization_event_id, EXCLUDED.metadata_event_id) "
    "> (t.metadata_time, t.metadata_materialization_event_id, t.metadata_event_id)))"
)


@dataclass(slots=True)
class PropertiesRow:
    key: str
    name: str | None
    description: str | None
    owners: list[str] | None
    url: str | None
    event_time: datetime
    event_id: str

    def as_tuple(self) -> tuple[object, ...]:
        return (self.key, self.name, self.description, self.owners, self.url, self.event_time, self.event_id)


@dataclass(slots=True)
class AssetRow:
    key: str
    first_seen: datetime
    last_seen: datetime
    # (event_time, event_id, status, by, error_type, error_message) of the newest materialization
    materialization: tuple[datetime, str, str, str | None, str | None, str | None] | None = None
    # (event_time, materialization_event_id, event_id, parsed metadata) of the newest metadata; its JSON
    # is made only for the row written (a batch may see many metadata events of a key)
    metadata: tuple[datetime, str, str, Mapping[str, Any]] | None = None

    def as_tuple(self) -> tuple[object, ...]:
        m = self.materialization or (None,) * 6
        d = self.metadata
        meta = (metadata_json(d[3]), d[0], d[1], d[2]) if d else (None,) * 4
        return (self.key, self.first_seen, self.last_seen, *m, *meta)


def metadata_json(metadata: Mapping[str, Any]) -> bytes:
    """The `assets.metadata` jsonb value as JSON bytes: orjson (several times faster than json), json only
    for an integer beyond 64 bits, which orjson refuses. PostgreSQL parses either into the same jsonb."""
    try:
        return orjson.dumps(metadata)
    except TypeError:
        return json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(slots=True)
class PropertiesEffects:
    """At most one row per key for each table, already merged within the batch."""

    properties: dict[str, PropertiesRow] = field(default_factory=dict)
    assets: dict[str, AssetRow] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.properties) + len(self.assets)


def _seen(assets: dict[str, AssetRow], key: str, time: datetime) -> AssetRow:
    """`key` was named by an event at `time`: its row, with first_seen / last_seen widened."""
    row = assets.get(key)
    if row is None:
        row = assets[key] = AssetRow(key, time, time)
    elif time < row.first_seen:
        row.first_seen = time
    elif time > row.last_seen:
        row.last_seen = time
    return row


def _offer_properties(offers: dict[str, PropertiesRow], key: str, properties: Mapping[str, Any],
                      time: datetime, event_id: str) -> None:
    """Properties of `key` from the event (time, event_id): kept if newer than those already offered."""
    current = offers.get(key)
    if current is not None and (current.event_time, current.event_id) >= (time, event_id):
        return
    owners = properties.get("owners")
    offers[key] = PropertiesRow(
        key, properties.get("name"), properties.get("description"),
        list(owners) if owners is not None else None, properties.get("url"), time, event_id,
    )


class PropertiesProjection:
    """Maintains `asset_properties` and `assets` (consumer group `<prefix>.properties`)."""

    name = "properties"
    tables = ("asset_properties", "assets")

    def __init__(self, schema: str | None = None) -> None:
        self.schema = schema

    def reduce(self, events: Iterable[Event], into: PropertiesEffects | None = None) -> PropertiesEffects:
        # The consumer's hottest loop after validation: event fields are unpacked once, and the helpers
        # are plain functions bound to locals (bench/README.md, issue 15, fifth pass).
        effects = into if into is not None else PropertiesEffects()
        assets, offers, seen = effects.assets, effects.properties, _seen
        for event_type, event_id, time, asset_key, materialization_id, record, _position, metadata in events:
            if event_type == MATERIALIZATION:
                row = seen(assets, asset_key, time)
                current = row.materialization
                if current is None or (time, event_id) > current[:2]:
                    error = record.get("error")
                    row.materialization = (time, event_id, record["status"], record.get("by"),
                                           error.get("type") if error else None,
                                           error.get("message") if error else None)
                for upstream in record.get("upstream_keys") or ():
                    seen(assets, upstream, time)
                properties = record.get("properties")
                if properties is not None:
                    _offer_properties(offers, asset_key, properties, time, event_id)
            elif event_type == DEPENDENCY:
                seen(assets, asset_key, time)
                upstream = record["upstream_key"]
                seen(assets, upstream, time)
                properties = record.get("upstream_properties")
                if properties is not None:
                    _offer_properties(offers, upstream, properties, time, event_id)
            elif event_type == METADATA:
                row = seen(assets, asset_key, time)
                order = (time, materialization_id, event_id)
                if row.metadata is None or order > row.metadata[:3]:
                    row.metadata = (*order, metadata)  # type: ignore[assignment]
        return effects

    def apply(self, conn: psycopg.Connection, effects: PropertiesEffects) -> None:
        with conn.transaction():
            if effects.properties:
                copy_to_temp(conn, "assetlog_batch_properties", PROPERTIES_COLUMNS,
                             (row.as_tuple() for row in effects.properties.values()))
                conn.execute(self._upsert_properties())
            if effects.assets:
                copy_to_temp(conn, "assetlog_batch_assets", ASSETS_COLUMNS,
                             (row.as_tuple() for row in effects.assets.values()))
                conn.execute(self._upsert_assets())

    def _upsert_properties(self) -> sql.Composed:
        columns = [name for name, _ in PROPERTIES_COLUMNS]
        return sql.SQL(
            "INSERT INTO {target} AS t ({columns}) SELECT {staged} FROM assetlog_batch_properties ORDER BY key "
            "ON CONFLICT (key) DO UPDATE SET {updates} "
            "WHERE (EXCLUDED.event_time, EXCLUDED.event_id) > (t.event_time, t.event_id)"
        ).format(
            target=table(self.schema, "asset_properties"),
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            staged=staged_select(PROPERTIES_COLUMNS),
            updates=sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns[1:]
            ),
        )

    def _upsert_assets(self) -> sql.Composed:
        columns = [name for name, _ in ASSETS_COLUMNS]

        def newest(names: tuple[str, ...], newer: sql.SQL) -> sql.Composed:
            return sql.SQL(", ").join(
                sql.SQL("{0} = CASE WHEN {1} THEN EXCLUDED.{0} ELSE t.{0} END").format(sql.Identifier(c), newer)
                for c in names
            )

        return sql.SQL(
            "INSERT INTO {target} AS t ({columns}) SELECT {staged} FROM assetlog_batch_assets ORDER BY key "
            "ON CONFLICT (key) DO UPDATE SET "
            "first_seen = LEAST(t.first_seen, EXCLUDED.first_seen), "
            "last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen), {materialization}, {metadata} "
            "WHERE EXCLUDED.first_seen < t.first_seen OR EXCLUDED.last_seen > t.last_seen "
            "OR {newer_materialization} OR {newer_metadata}"
        ).format(
            target=table(self.schema, "assets"),
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            staged=staged_select(ASSETS_COLUMNS),
            materialization=newest(MATERIALIZATION_COLUMNS, _NEWER_MATERIALIZATION),
            metadata=newest(METADATA_COLUMNS, _NEWER_METADATA),
            newer_materialization=_NEWER_MATERIALIZATION,
            newer_metadata=_NEWER_METADATA,
        )
