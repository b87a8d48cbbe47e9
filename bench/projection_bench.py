"""P2: projection throughput of each consumer vs raw COPY and consume-only, in the same run.

Publishes N realistic events (task runs: one materialization, 0-3 upstream
dependencies, metadata half the time, properties a third of the time) to a
fresh topic prefix, projects them into a fresh database with each consumer,
and measures in the same run on the same servers:

- consume-only: a bare confluent-kafka consumer reading the same topics (Kafka's ceiling);
- COPY: the same events as `lineage_history` rows, pre-built in memory, COPYed
  into a new table defined like `lineage_history` (same columns, constraints and
  indexes: the physical cost of landing those rows), and into an index-free
  copy of it (PostgreSQL's bare ceiling);
- row-by-row: one INSERT and one commit per event on a sample (the naive design).

Each consumer runs as users run it: `assetlog consume NAME --until-caught-up`,
a process of its own (`--in-process` runs it inside this script, as before
2026-11-27; three alternated pairs that day could not tell the two apart, the
box's speed moving by a third between runs). Its rate is the consumer's own
report (first message to last commit). Beside each
figure: the CPU seconds per 1M events of the consumer's process (start-up
included) or of this script (a baseline's client), and of the PostgreSQL
backend(s) serving it (`cpu_probe.py`), so the next bottleneck is visible.

Run against the stack the environment names:
    eval "$(assetlog stack env)" && python bench/projection_bench.py [--events 50000]
Prints a table and writes bench/results/projection_bench.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, KafkaError, Producer
from cpu_probe import BackendSampler, backend_pid, pid_cpu_seconds
from psycopg import sql
from support import child_env, scratch

from assetlog.config import Settings
from assetlog.consumers import DEFAULT_BATCH_SIZE, run_until_caught_up, tune_interpreter
from assetlog.producer.event_builders import EventIdSource
from assetlog.projections import to_event
from assetlog.projections.base import copy_rows
from assetlog.projections.lineage import HISTORY_COLUMNS, history_row
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA, encode

RESULTS = Path(__file__).resolve().parent / "results"
PRODUCER = {"host": "bench", "pid": 1, "version": "0.1.0"}


def generate(n_events: int, seed: int = 7) -> list[tuple[str, dict]]:
    """Task runs until n_events events exist, with the producer's shapes, links and ids (time-ordered, from
    the producer's own `EventIdSource`)."""
    rng = random.Random(seed)
    new_id = EventIdSource()
    keys = [f"s3://lake/layer{i % 7}/table_{i}.parquet" for i in range(max(10, n_events // 10))]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    events: list[tuple[str, dict]] = []
    i = 0
    while len(events) < n_events:
        i += 1
        key = rng.choice(keys)
        upstreams = rng.sample(keys, rng.randint(0, 3))
        when = start + timedelta(seconds=i, microseconds=rng.randint(0, 999_999))
        run = {"flow_run_id": new_id(), "flow_name": "nightly", "task_run_id": new_id(),
               "task_name": f"build_{i % 50}"}
        status = "FAILED" if rng.random() < 0.05 else "SUCCEEDED"
        mid = new_id()
        properties = ({"name": f"Table {key}", "description": "A table of the lake", "owners": ["data-team"],
                       "url": f"https://catalog/{i}"} if rng.random() < 0.33 else None)
        events.append((MATERIALIZATION, {
            "event_id": mid, "event_time": when, "asset_key": key, "status": status, "properties": properties,
            "by": "dbt" if i % 4 == 0 else None, "upstream_keys": upstreams,
            "error": {"type": "ValueError", "message": "bad row"} if status == "FAILED" else None,
            "run": run, "producer": PRODUCER}))
        for up in upstreams:
            events.append((DEPENDENCY, {
                "event_id": new_id(), "event_time": when, "upstream_key": up, "downstream_key": key,
                "declared": "EXPLICIT" if rng.random() < 0.2 else "INFERRED", "upstream_properties": None,
                "materialization_event_id": mid, "status": status, "run": run, "producer": PRODUCER}))
        if rng.random() < 0.5:
            events.append((METADATA, {
                "event_id": new_id(), "event_time": when, "asset_key": key,
                "metadata_json": json.dumps({"rows": rng.randint(0, 10**6), "columns": 12, "source": "bench"}),
                "materialization_event_id": mid, "status": status, "run": run, "producer": PRODUCER}))
    return events[:n_events]


def publish(settings: Settings, events: list[tuple[str, dict]]) -> None:
    topics = {MATERIALIZATION: settings.topics.materializations, DEPENDENCY: settings.topics.dependencies,
              METADATA: settings.topics.metadata}
    producer = Producer(settings.kafka_client_config(
        defaults={"linger.ms": 20, "batch.num.messages": 10000, "compression.type": "lz4"},
        required={"enable.idempotence": True, "acks": "all"}))
    for event_type, record in events:
        key = record["downstream_key"] if event_type == DEPENDENCY else record["asset_key"]
        while True:
            try:
                producer.produce(topics[event_type], key=key.encode(), value=encode(event_type, record))
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(120):
        raise SystemExit("the broker did not acknowledge every event")


def consume_only(settings: Settings, expected: int) -> tuple[float, float]:
    """Seconds for a bare consumer to read every message (from the first message on), and its CPU
    seconds."""
    consumer = Consumer(settings.kafka_client_config(required={
        "group.id": f"bench-consume-only-{uuid.uuid4()}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "enable.partition.eof": True}))
    consumer.subscribe(list(settings.topics.events))
    seen, first = 0, None
    cpu = time.process_time()
    try:
        while seen < expected:
            for message in consumer.consume(num_messages=5000, timeout=0.05):
                if message.error() is None:
                    if first is None:
                        first = time.monotonic()
                    message.value()
                    seen += 1
                elif message.error().code() != KafkaError._PARTITION_EOF:
                    raise SystemExit(f"Kafka: {message.error()}")
        return time.monotonic() - (first or time.monotonic()), time.process_time() - cpu
    finally:
        consumer.close()


def copy_baseline(dsn: str, events: list[tuple[str, dict]], with_indexes: bool) -> dict[str, float | None]:
    """COPY the events' lineage_history rows (built beforehand) into a table like it, as the lineage
    consumer writes them (binary, declared types): seconds, client and backend CPU seconds."""
    rows = [history_row(to_event(t, r)) for t, r in events]
    name = "copy_baseline_indexed" if with_indexes else "copy_baseline_bare"
    like = sql.SQL("INCLUDING ALL" if with_indexes else "INCLUDING DEFAULTS")
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE lineage_history {})").format(sql.Identifier(name), like))
        conn.commit()
        backend = backend_pid(conn)
        backend_before = pid_cpu_seconds(backend)
        cpu, started = time.process_time(), time.monotonic()
        with conn.cursor() as cur:
            copy_rows(cur, sql.Identifier(name), HISTORY_COLUMNS, rows)
        conn.commit()
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu
        backend_after = pid_cpu_seconds(backend)
    pg = backend_after - backend_before if backend_before is not None and backend_after is not None else None
    return {"seconds": seconds, "cpu_seconds": cpu, "postgres_cpu_seconds": pg}


def consume_process(name: str, settings: Settings, batch_size: int) -> tuple[dict, float]:
    """`assetlog consume NAME --until-caught-up --json` in a process of its own, as users run it: its
    report, and its CPU seconds (user + system, start-up included)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "assetlog", "consume", name, "--until-caught-up", "--json", "--quiet",
         "--batch-size", str(batch_size)], env=child_env(settings), stdout=subprocess.PIPE, text=True)
    output = child.stdout.read() if child.stdout else ""
    _pid, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"assetlog consume {name} failed (wait status {status})")
    return json.loads(output), usage.ru_utime + usage.ru_stime


def consume_in_process(name: str, settings: Settings, batch_size: int) -> tuple[dict, float]:
    """The same consumer run inside this script (the harness before 2026-11-27)."""
    gc.collect()
    gc.freeze()  # the generated events are this script's: keep the collector from walking them again and again
    tune_interpreter()  # as `assetlog consume` does
    cpu = time.process_time()
    stats = run_until_caught_up(name, settings, batch_size=batch_size)
    return stats.as_dict(), time.process_time() - cpu


def row_by_row(dsn: str, events: list[tuple[str, dict]], sample: int = 1000) -> float:
    """Events/s of one INSERT + one commit per event (the design the batches replace), on a sample."""
    rows = [history_row(to_event(t, r)) for t, r in events[:sample]]
    rows = [(*row[:11], row[11].decode(), *row[12:]) for row in rows]  # the payload as JSON text
    columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in HISTORY_COLUMNS)
    insert = sql.SQL("INSERT INTO row_baseline ({}) VALUES ({})").format(
        columns, sql.SQL(", ").join(sql.Placeholder() * len(HISTORY_COLUMNS)))
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE row_baseline (LIKE lineage_history INCLUDING ALL)")
        conn.commit()
        started = time.monotonic()
        for row in rows:
            conn.execute(insert, row)
            conn.commit()
        return len(rows) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events to publish and project (default 50000)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"consumer batch size (default {DEFAULT_BATCH_SIZE}, the consumers' own)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--in-process", action="store_true",
                        help="run the consumers inside this script rather than as `assetlog consume` processes")
    args = parser.parse_args()

    with scratch("projection") as work:
        settings = work.event_topics(partitions=args.partitions)
        dsn, admin_dsn, database = work.dsn, work.admin_dsn, work.database
        events = generate(args.events)
        started = time.monotonic()
        publish(settings, events)
        publish_s = time.monotonic() - started
        n = len(events)
        results: dict[str, dict] = {}
        consume_s, consume_cpu = consume_only(settings, n)
        results["consume-only"] = {"seconds": consume_s, "events_per_second": n / consume_s,
                                   "cpu_seconds": consume_cpu, "postgres_cpu_seconds": None}
        for name in ("properties", "lineage"):
            with BackendSampler(admin_dsn, database, f"assetlog.consume.{name}") as backends:
                report, cpu = (consume_in_process if args.in_process else consume_process)(
                    name, settings, args.batch_size)
            if report["messages"] != n:
                raise SystemExit(f"{name} projected {report['messages']} of {n} events")
            results[name] = {"seconds": report["busy_seconds"], "events_per_second": n / report["busy_seconds"],
                             "seconds_with_group_join": report["seconds"], "batches": report["batches"],
                             "cpu_seconds": cpu, "postgres_cpu_seconds": backends.seconds,
                             "in_process": args.in_process}
        for label, indexed in (("copy", True), ("copy-no-index", False)):
            measured = copy_baseline(dsn, events, indexed)
            results[label] = {**measured, "events_per_second": n / measured["seconds"]}
        naive = row_by_row(dsn, events)
        results["row-by-row"] = {"events_per_second": naive}

    copy_rate = results["copy"]["events_per_second"]
    consume_rate = results["consume-only"]["events_per_second"]
    print(f"P2 projection: {n} events, {args.partitions} partitions per topic, batch {args.batch_size}, "
          f"published in {publish_s:.1f}s")
    print(f"{'measure':<15}{'events/s':>12}{'vs COPY':>10}{'vs consume':>12}{'client CPU s/1M':>17}"
          f"{'PostgreSQL CPU s/1M':>21}")
    for name in ("properties", "lineage", "copy", "copy-no-index", "consume-only", "row-by-row"):
        result = results[name]
        rate = result["events_per_second"]
        result["ratio_to_copy"] = rate / copy_rate
        result["ratio_to_consume_only"] = rate / consume_rate
        per_million = {side: (result[side] * 1e6 / n if result.get(side) is not None else None)
                       for side in ("cpu_seconds", "postgres_cpu_seconds")}
        result.update({f"{side}_per_million": value for side, value in per_million.items()})
        shown = ["-" if value is None else f"{value:,.1f}" for value in per_million.values()]
        print(f"{name:<15}{rate:>12,.0f}{rate / copy_rate:>9.2f}x{rate / consume_rate:>11.2f}x{shown[0]:>17}"
              f"{shown[1]:>21}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "projection_bench.json"
    out.write_text(json.dumps({
        "benchmark": "P2 projection", "events": n, "partitions": args.partitions, "batch_size": args.batch_size,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
        "python": platform.python_version(), "results": results,
        "goal": ">= 0.4x COPY (copy: same rows into a table defined like lineage_history, indexes included)",
    }, indent=2))
    print(f"written {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
