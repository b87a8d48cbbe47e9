"""The query benchmarks' graph: its shape, the events a producer would emit for it, and two loaders.

Shape (`build_dag`): a layered DAG like real pipelines. Assets sit in layers
and domains; each non-source asset reads upstreams from earlier layers (60%
from the previous layer, 90% from its own domain), and 5% of upstream slots go
to 50 hub assets of the first layer with Zipf popularity (1/rank), so a few
hubs have a large share of all dependants (at 1M assets / 10M edges the
biggest has about 100k). 10% of assets are materialized a second time a day
later (new metadata, half of them with overwritten properties), so the
history has depth and "as of" has something to answer.

Loaders, both fed the same events (ids drawn from the seeded generator, so
two loads of one seed hold identical rows):

- `load_through_projections`: every batch reduced and applied with
  `PropertiesProjection` and `LineageProjection`, exactly as the consumers do
  (only Kafka is left out). The reference; about 10k events/s here.
- `copy_load`: the same rows by the projections' own code, in bulk.
  `lineage_history` gets `history_row(event)` of every validated event by
  COPY, which is what `LineageProjection.apply` itself does with events it has
  not stored yet; the properties projection reduces all events into one
  effects object (its rules are order-independent, which is what lets the
  consumers batch at all) and applies it once; `asset_edges` is derived from
  the loaded history by `seed_from_history`, the lineage projection's own rule
  for rebuilding edges (`replay --since`). Indexes and primary keys are
  dropped during the load and rebuilt from their saved definitions afterwards,
  as replay defers them. `tests/test_graph_load.py` checks that both loaders
  produce the same tables, row for row.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from assetlog.projections import LineageProjection, PropertiesProjection, to_event
from assetlog.projections.base import copy_rows
from assetlog.projections.events import Event
from assetlog.projections.lineage import HISTORY_COLUMNS, derive_edges, history_row, seed_from_history
from assetlog.projections.properties import PropertiesEffects
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA

PRODUCER = {"host": "bench", "pid": 1, "version": "0.1.0"}
START = datetime(2026, 1, 1, tzinfo=UTC)
HUBS = 50
LOADED_TABLES = ("assets", "asset_properties", "asset_edges", "lineage_history")


def build_dag(n: int, layers: int, rng: random.Random, edges: int | None = None) -> tuple[list[str], list[list[int]]]:
    """Asset keys and, per asset, the indexes of its upstreams (about `edges` in all when given)."""
    domains = max(1, n // 500)
    layer_of = [i * layers // n for i in range(n)]
    domain_of = [rng.randrange(domains) for _ in range(n)]
    keys = [f"s3://lake/domain{domain_of[i]:03d}/layer{layer_of[i]:02d}/table_{i:06d}.parquet" for i in range(n)]
    buckets: dict[tuple[int, int], list[int]] = {}
    by_layer: dict[int, list[int]] = {}
    for i in range(n):
        buckets.setdefault((layer_of[i], domain_of[i]), []).append(i)
        by_layer.setdefault(layer_of[i], []).append(i)
    hubs = rng.sample(by_layer[0], min(HUBS, len(by_layer[0])))
    hub_weights = [1 / (rank + 1) for rank in range(len(hubs))]
    upstreams: list[list[int]] = []
    # --edges: 1..2m-1 distinct upstreams per non-source asset (mean m); else 1-5 draws (the v2 graph).
    fan_in = edges / sum(1 for i in range(n) if layer_of[i] > 0) if edges else None
    most = max(1, round(2 * fan_in - 1)) if fan_in else 5
    for i in range(n):
        layer = layer_of[i]
        chosen: set[int] = set()
        if layer > 0:
            wanted = rng.randint(1, most)
            for _ in range(wanted if fan_in is None else wanted * 4):
                if fan_in is not None and len(chosen) >= wanted:
                    break
                if rng.random() < 0.05:
                    chosen.add(rng.choices(hubs, hub_weights)[0])
                    continue
                source_layer = layer - 1 if rng.random() < 0.6 else rng.randrange(layer)
                domain = domain_of[i] if rng.random() < 0.9 else rng.randrange(domains)
                chosen.add(rng.choice(buckets.get((source_layer, domain)) or by_layer[source_layer]))
        upstreams.append(sorted(chosen))
    return keys, upstreams


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def task_run_events(key: str, ups: list[str], when: datetime, rng: random.Random, i: int,
                    with_properties: bool, version: int) -> list[tuple[str, dict]]:
    """One finished task run materializing `key`, as the producer would emit it."""
    run = {"flow_run_id": _uuid(rng), "flow_name": f"pipeline_{i % 40}", "task_run_id": _uuid(rng),
           "task_name": f"build_{i % 300}"}
    mid = _uuid(rng)
    properties = {"name": f"Table {i} v{version}", "description": f"Table {i} of the lake, built daily",
                  "owners": [f"team-{i % 40}"], "url": f"https://catalog.example.com/{i}" if version == 1 else None,
                  } if with_properties else None
    events: list[tuple[str, dict]] = [(MATERIALIZATION, {
        "event_id": mid, "event_time": when, "asset_key": key, "status": "SUCCEEDED", "properties": properties,
        "by": "dbt" if i % 4 == 0 else None, "upstream_keys": ups, "error": None, "run": run, "producer": PRODUCER})]
    for up in ups:
        events.append((DEPENDENCY, {
            "event_id": _uuid(rng), "event_time": when, "upstream_key": up, "downstream_key": key,
            "declared": "EXPLICIT" if rng.random() < 0.2 else "INFERRED", "upstream_properties": None,
            "materialization_event_id": mid, "status": "SUCCEEDED", "run": run, "producer": PRODUCER}))
    if rng.random() < 0.5:
        events.append((METADATA, {
            "event_id": _uuid(rng), "event_time": when, "asset_key": key,
            "metadata_json": json.dumps({"rows": rng.randint(0, 10**7), "version": version}),
            "materialization_event_id": mid, "status": "SUCCEEDED", "run": run, "producer": PRODUCER}))
    return events


def event_batches(keys: list[str], upstreams: list[list[int]], layers: int, rng: random.Random,
                  chunk: int) -> Iterator[list[Event]]:
    """Validated events of every asset's task runs, `chunk` assets per batch (deterministic for a seed)."""
    for raw in raw_event_batches(keys, upstreams, layers, rng, chunk):
        yield [to_event(event_type, record) for event_type, record in raw]


def raw_event_batches(keys: list[str], upstreams: list[list[int]], layers: int, rng: random.Random,
                      chunk: int) -> Iterator[list[tuple[str, dict]]]:
    """The records of every asset's task runs as a producer sends them, `chunk` assets per batch."""
    n = len(keys)
    second_runs = set(rng.sample(range(n), n // 10))
    for lo in range(0, n, chunk):
        raw: list[tuple[str, dict]] = []
        for i in range(lo, min(n, lo + chunk)):
            ups = [keys[u] for u in upstreams[i]]
            when = START + timedelta(minutes=10 * (i * layers // n), microseconds=rng.randrange(10**8))
            with_properties = i % 10 < 3
            raw += task_run_events(keys[i], ups, when, rng, i, with_properties, 1)
            if i in second_runs:
                raw += task_run_events(keys[i], ups, when + timedelta(days=1), rng, i,
                                       with_properties and i % 2 == 0, 2)
        yield raw


def load_through_projections(dsn: str, keys: list[str], upstreams: list[list[int]], layers: int,
                             rng: random.Random, chunk: int = 4000, progress: bool = False) -> tuple[int, float]:
    """Project every task run's events through both projections, `chunk` assets per batch."""
    projections = (PropertiesProjection(), LineageProjection())
    count = 0
    started = time.monotonic()
    with psycopg.connect(dsn) as conn:
        for events in event_batches(keys, upstreams, layers, rng, chunk):
            for projection in projections:
                with conn.transaction():
                    projection.apply(conn, projection.reduce(events))
            count += len(events)
            if progress:
                print(f"  {count:,} events in {time.monotonic() - started:.0f}s", flush=True)
    return count, time.monotonic() - started


def _drop_indexes(conn: psycopg.Connection, tables: tuple[str, ...]) -> list[sql.Composable]:
    """Drop the tables' indexes and primary keys; return the statements that rebuild them as they were."""
    rebuild: list[sql.Composable] = []
    for table, name, definition in conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = ANY(%s::regclass[]) AND contype IN ('p', 'u')", (list(tables),)).fetchall():
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
        rebuild.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)))
    for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = ANY(%s)", (list(tables),)).fetchall():
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        # A partitioned table's index is defined "ON ONLY" the parent (its partitions' indexes are
        # attached one by one); rebuilt that way it stays invalid and the partitions get none.
        rebuild.append(sql.SQL(definition.replace(" ON ONLY ", " ON ", 1)))
    return rebuild


def copy_load(dsn: str, keys: list[str], upstreams: list[list[int]], layers: int, rng: random.Random,
              chunk: int = 20000, progress: bool = False) -> tuple[int, float]:
    """The rows `load_through_projections` would produce, in bulk (see the module docstring)."""
    properties = PropertiesProjection()
    reduced = PropertiesEffects()
    count = 0
    started = time.monotonic()
    with psycopg.connect(dsn) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        with conn.transaction():
            rebuild = _drop_indexes(conn, ("lineage_history", "asset_edges"))
        for events in event_batches(keys, upstreams, layers, rng, chunk):
            with conn.transaction(), conn.cursor() as cur:
                copy_rows(cur, sql.Identifier("lineage_history"), HISTORY_COLUMNS,
                          [history_row(event) for event in events])
            properties.reduce(events, reduced)
            count += len(events)
            if progress:
                print(f"  {count:,} events in {time.monotonic() - started:.0f}s", flush=True)
        properties.apply(conn, reduced)
        with conn.transaction():
            # seed_from_history copies history rows it lacks from a source schema (none here: an empty
            # one) and registers the target's ids; derive_edges makes the edges from what the target
            # holds, with the projection's merge rules (what a replay does).
            current = conn.execute("SELECT current_schema()").fetchone()[0]
            conn.execute("CREATE SCHEMA assetlog_bench_empty")
            conn.execute("CREATE TABLE assetlog_bench_empty.lineage_history (LIKE lineage_history)")
            seed_from_history(conn, "assetlog_bench_empty", current, {})
            derive_edges(conn, current)
            conn.execute("DROP SCHEMA assetlog_bench_empty CASCADE")
        if progress:
            print(f"  edges derived at {time.monotonic() - started:.0f}s; rebuilding indexes", flush=True)
        for statement in rebuild:
            with conn.transaction():
                conn.execute(statement)
    return count, time.monotonic() - started
