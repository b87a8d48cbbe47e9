"""Build valid Assetlog events the way the producer does, publish them, apply them, dump tables.

The consumers' tests must not depend on the producer SDK, so this module
models the producer's contract directly: per finished materializing task run,
for each asset one Materialization, one Dependency per upstream and one
Metadata event when metadata was added, all sharing one event_time, the
dependencies and metadata pointing at their Materialization's event_id.
Publishing uses a raw confluent-kafka Producer keyed like the producer
(asset key; downstream key for dependencies).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from confluent_kafka import Producer
from psycopg import sql
from psycopg.rows import dict_row

from assetlog.config import Settings
from assetlog.projections import Position, projection_by_name, to_event
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA, encode

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
PRODUCER = {"host": "worker-1", "pid": 4242, "version": "0.1.0"}

EventRecord = tuple[str, dict[str, Any]]  # (event type, Avro record)


def at(seconds: float) -> datetime:
    """A microsecond-precision UTC time `seconds` after a fixed epoch (readable test data)."""
    return EPOCH + timedelta(microseconds=round(seconds * 1_000_000))


def props(name: str | None = None, description: str | None = None, owners: Sequence[str] | None = None,
          url: str | None = None) -> dict[str, Any]:
    """An AssetProperties record."""
    return {"name": name, "description": description, "owners": list(owners) if owners is not None else None,
            "url": url}


@dataclass(frozen=True)
class Asset:
    """What a task names in @materialize or asset_deps: a key, with properties or not."""

    key: str
    properties: dict[str, Any] | None = None


@dataclass(frozen=True)
class Upstream:
    key: str
    declared: str = "INFERRED"
    properties: dict[str, Any] | None = None


@dataclass
class TaskRun:
    """One finished materializing task run, turned into events by `events()`."""

    assets: Sequence[Asset | str]
    upstreams: Sequence[Upstream | str] = ()
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    status: str = "SUCCEEDED"
    by: str | None = None
    error: tuple[str, str] | None = None
    time: datetime = EPOCH
    task_name: str = "task"
    flow_name: str | None = "flow"
    flow_run_id: str | None = field(default_factory=lambda: str(uuid.uuid4()))
    task_run_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def events(self) -> list[EventRecord]:
        run = {"flow_run_id": self.flow_run_id if self.flow_name else None, "flow_name": self.flow_name,
               "task_run_id": self.task_run_id, "task_name": self.task_name}
        upstreams = [Upstream(u) if isinstance(u, str) else u for u in self.upstreams]
        out: list[EventRecord] = []
        for item in self.assets:
            asset = Asset(item) if isinstance(item, str) else item
            materialization_id = str(uuid.uuid4())
            out.append((MATERIALIZATION, {
                "event_id": materialization_id, "event_time": self.time, "asset_key": asset.key,
                "status": self.status, "properties": asset.properties, "by": self.by,
                "upstream_keys": [u.key for u in upstreams],
                "error": {"type": self.error[0], "message": self.error[1]} if self.error else None,
                "run": run, "producer": PRODUCER,
            }))
            for upstream in upstreams:
                out.append((DEPENDENCY, {
                    "event_id": str(uuid.uuid4()), "event_time": self.time, "upstream_key": upstream.key,
                    "downstream_key": asset.key, "declared": upstream.declared,
                    "upstream_properties": upstream.properties, "materialization_event_id": materialization_id,
                    "status": self.status, "run": run, "producer": PRODUCER,
                }))
            if asset.key in self.metadata:
                out.append((METADATA, {
                    "event_id": str(uuid.uuid4()), "event_time": self.time, "asset_key": asset.key,
                    "metadata_json": json.dumps(self.metadata[asset.key]),
                    "materialization_event_id": materialization_id, "status": self.status,
                    "run": run, "producer": PRODUCER,
                }))
        return out


def events_of(runs: Iterable[TaskRun]) -> list[EventRecord]:
    return [event for run in runs for event in run.events()]


# --- The Prefect assets guide's pipelines, as the producer would emit them -------------------------

CUSTOMERS = "snowflake://my-warehouse/customer_db/customers"
PROCESSED = "s3://my-bucket/processed-data.csv"
SALES = "s3://my-bucket/sales-report.csv"
USERS = "postgres://prod-db/public/users"
FINAL = "s3://my-bucket/final-report.csv"
BRONZE, SILVER, GOLD = "s3://lake/bronze/orders.parquet", "s3://lake/silver/orders.parquet", "s3://lake/gold/revenue.parquet"
LOOKUP = "s3://reference/regions.csv"
DASHBOARD = "tableau://analytics/revenue-dashboard"

CUSTOMERS_PROPS = props("Customer Data", "Customer records from our CRM system", ["data-team@company.com"],
                        "https://dashboard.company.com/customers")
PROCESSED_PROPS = props("Processed Customer Data", "Clean customer data with PII removed",
                        ["data-team@company.com", "alice@company.com"],
                        "https://dashboard.company.com/datasets/customer-data")
USERS_PROPS = props("Production Users", "The users table of the production database", ["platform-team"],
                    "https://db.company.com/users")
DASHBOARD_V1 = props("Revenue", "Revenue by region", ["bi-team"], "https://tableau.company.com/revenue")
DASHBOARD_V2 = props("Revenue by region", "Revenue by region, daily", ["bi-team", "finance"])


def guide_pipelines() -> list[TaskRun]:
    """The guide's examples: analytics pipeline, accumulating metadata, explicit and mixed
    dependencies, an external database asset, a properties overwrite, a failure."""
    flow = str(uuid.uuid4())
    return [
        # analytics pipeline: two described assets, inferred dependency, metadata
        TaskRun([Asset(CUSTOMERS, CUSTOMERS_PROPS)], time=at(10), task_name="extract", flow_name="analytics",
                flow_run_id=flow),
        TaskRun([Asset(PROCESSED, PROCESSED_PROPS)], [CUSTOMERS], metadata={PROCESSED: {"record_count": 1500}},
                time=at(20), task_name="transform", flow_name="analytics", flow_run_id=flow),
        # accumulating metadata (the shallow merge of several add_metadata calls), string key
        TaskRun([SALES], metadata={SALES: {"rows": 10, "columns": 3, "quality": {"nulls": 0}}}, time=at(30),
                task_name="sales_report", by="dbt"),
        # an external database asset given as a full Asset in asset_deps (explicit)
        TaskRun([FINAL], [Upstream(USERS, "EXPLICIT", USERS_PROPS)], time=at(40), task_name="final_report"),
        # mixed: bronze -> silver (inferred) + explicit lookup; gold gets silver only
        TaskRun([BRONZE], time=at(50), task_name="bronze", flow_name="medallion"),
        TaskRun([SILVER], [BRONZE, Upstream(LOOKUP, "EXPLICIT")], time=at(51), task_name="silver",
                flow_name="medallion"),
        TaskRun([GOLD], [SILVER], time=at(52), task_name="gold", flow_name="medallion"),
        # properties overwrite: the newer properties have no url, so url becomes null
        TaskRun([Asset(DASHBOARD, DASHBOARD_V1)], [GOLD], time=at(60), task_name="dashboard"),
        TaskRun([Asset(DASHBOARD, DASHBOARD_V2)], [GOLD], time=at(70), task_name="dashboard"),
        # a string-key materialization later on: never touches the properties
        TaskRun([DASHBOARD], [GOLD], time=at(80), task_name="dashboard_refresh"),
        # a failed materialization keeps its metadata and records the error
        TaskRun([GOLD], [SILVER], metadata={GOLD: {"partial": True}}, status="FAILED",
                error=("ValueError", "negative revenue"), time=at(90), task_name="gold", flow_name="medallion"),
    ]


# --- Kafka -----------------------------------------------------------------------------------------

def topic_for(settings: Settings, event_type: str) -> str:
    topics = settings.topics
    return {MATERIALIZATION: topics.materializations, DEPENDENCY: topics.dependencies,
            METADATA: topics.metadata}[event_type]


def message_key(event_type: str, record: Mapping[str, Any]) -> bytes:
    key = record["downstream_key"] if event_type == DEPENDENCY else record["asset_key"]
    return str(key).encode("utf-8")


class Publisher:
    """A raw confluent-kafka producer that records where each message landed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(settings.kafka_client_config(
            defaults={"linger.ms": 5, "batch.num.messages": 10000},
            required={"enable.idempotence": True, "acks": "all"}))
        self.positions: list[Position | None] = []
        self.errors: list[str] = []

    def raw(self, topic: str, key: bytes | None, value: bytes | None) -> int:
        """Queue one message; returns its index in `positions` (filled on flush)."""
        index = len(self.positions)
        self.positions.append(None)

        def delivered(error, message) -> None:
            if error is not None:
                self.errors.append(str(error))
            else:
                self.positions[index] = Position(message.topic(), message.partition(), message.offset())

        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)
        return index

    def event(self, event_type: str, record: Mapping[str, Any]) -> int:
        return self.raw(topic_for(self.settings, event_type), message_key(event_type, record),
                        encode(event_type, record))

    def flush(self) -> list[Position]:
        remaining = self.producer.flush(60)
        assert remaining == 0 and not self.errors, f"{remaining} undelivered, errors: {self.errors[:3]}"
        return [p for p in self.positions if p is not None]


def publish(settings: Settings, events: Iterable[EventRecord]) -> list[tuple[str, dict[str, Any], Position]]:
    """Publish events and return them with the position each landed at."""
    publisher = Publisher(settings)
    events = list(events)
    for event_type, record in events:
        publisher.event(event_type, record)
    publisher.flush()
    return [(t, r, p) for (t, r), p in zip(events, publisher.positions, strict=True)]  # type: ignore[misc]


def end_offsets(positions: Iterable[Position]) -> dict[tuple[str, int], int]:
    """The next offset after the last of `positions` in each (topic, partition): where a consumer that
    projected them all has its offsets."""
    ends: dict[tuple[str, int], int] = {}
    for position in positions:
        tp = (position.topic, position.partition)
        ends[tp] = max(ends.get(tp, 0), position.offset + 1)
    return ends


def published_ends(published: Iterable[tuple[str, dict[str, Any], Position]]) -> dict[tuple[str, int], int]:
    """`end_offsets` of what `publish` returned."""
    return end_offsets(p for _t, _r, p in published)


# --- PostgreSQL ------------------------------------------------------------------------------------

def apply_directly(conn: psycopg.Connection, projection_name: str,
                   events: Iterable[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], Position | None]]) -> None:
    """Project events without Kafka, in the order given, as one batch (the expected rows)."""
    projection = projection_by_name(projection_name)
    validated = [to_event(e[0], e[1], e[2] if len(e) > 2 else None) for e in events]  # type: ignore[misc]
    with conn.transaction():
        projection.apply(conn, projection.reduce(validated))


# A lineage_history row's whole event in SQL (its columns and its payload, migration 0009's function).
WHOLE_EVENT = ("assetlog_lineage_event(event_type, event_id, event_time, asset_key, upstream_key, status, "
               "materialization_event_id, flow_run_id, flow_name, task_run_id, task_name, payload)")

PROJECTED_TABLES = {
    "asset_properties": "key",
    "assets": "key",
    "asset_edges": "upstream_key, downstream_key",
    "lineage_history": "event_id",
}


def dump_tables(dsn: str, tables: Iterable[str] = PROJECTED_TABLES) -> dict[str, list[tuple]]:
    """Every row of the projected tables, in key order: equal dumps mean identical tables."""
    out: dict[str, list[tuple]] = {}
    with psycopg.connect(dsn) as conn:
        for name in tables:
            order = sql.SQL(PROJECTED_TABLES[name])  # type: ignore[arg-type]
            out[name] = conn.execute(
                sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(name), order)
            ).fetchall()
    return out


def rows_by_key(dsn: str, table_name: str) -> dict[str, dict[str, Any]]:
    """A keyed table as {key: {column: value}} for readable assertions."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table_name))).fetchall()
    return {row["key"]: row for row in rows}
