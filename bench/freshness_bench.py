"""P5: freshness, the time from a task's end to its rows being visible in PostgreSQL, at a steady rate.

A worker loop runs flows of `@materialize` tasks through the producer SDK at a
steady rate (default 1,000 events/s: each task run emits a materialization,
two dependencies and a metadata event) while both live consumers run
(`assetlog consume properties` and `assetlog consume lineage`, default
settings, as deployed). One task run in `--sample-every` materializes an asset
of its own; an observer polls PostgreSQL every few milliseconds for those
assets and records when all of a task's rows are visible: its four
`lineage_history` rows and its `assets` row with the materialization and the
metadata. Freshness = that moment minus the task's end (the events'
`event_time`, stamped when the task returned).

Physical baseline, same run, same servers, same rate: a raw confluent-kafka
producer (linger.ms=0, acks=all) sends one message per event to a topic of
the same partitions, and a bare consumer process inserts whatever it has
received at once into a one-column table and commits: one Kafka hop plus one
PostgreSQL commit, with no batching wait, no outbox, no decoding.

    eval "$(assetlog stack env)" && python bench/freshness_bench.py [--seconds 60] [--rate 1000]
Prints a table and writes bench/results/freshness_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from support import child_env, scratch

from assetlog.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
EVENTS_PER_TASK = 4
POLL_SECONDS = 0.002
BASELINE_TABLE = "freshness_baseline"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def summary(latencies_ms: list[float]) -> dict[str, float]:
    return {"samples": len(latencies_ms), "p50_ms": percentile(latencies_ms, 0.5),
            "p90_ms": percentile(latencies_ms, 0.9), "p99_ms": percentile(latencies_ms, 0.99),
            "max_ms": max(latencies_ms, default=float("nan")),
            "mean_ms": statistics.fmean(latencies_ms) if latencies_ms else float("nan")}


class Observer:
    """Polls PostgreSQL for the keys it is given; records (key, wall time first fully visible)."""

    def __init__(self, dsn: str, query: sql.Composable) -> None:
        self.dsn, self.query = dsn, query
        self.pending: set[str] = set()
        self.seen: dict[str, tuple[float, float | None]] = {}  # key -> (seen at, event time or None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="freshness-observer", daemon=True)

    def watch(self, key: str) -> None:
        with self._lock:
            self.pending.add(key)

    def start(self) -> Observer:
        self._thread.start()
        return self

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                with self._lock:
                    keys = list(self.pending)
                if keys:
                    rows = conn.execute(self.query, (keys,)).fetchall()
                    now = time.time()
                    with self._lock:
                        for key, event_time in rows:
                            if key in self.pending:
                                self.pending.discard(key)
                                self.seen[key] = (now, event_time.timestamp() if event_time else None)
                time.sleep(POLL_SECONDS)

    def drain(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join()
        if self.pending:
            raise SystemExit(f"freshness_bench: {len(self.pending)} sampled tasks never became visible")


# All four lineage rows and the assets row (materialization and metadata) of a sampled task.
ASSETLOG_VISIBLE = sql.SQL(
    "SELECT h.asset_key, max(h.event_time) FROM lineage_history h JOIN assets a ON a.key = h.asset_key "
    "WHERE h.asset_key = ANY(%s) AND a.last_materialized_at IS NOT NULL AND a.metadata IS NOT NULL "
    "GROUP BY h.asset_key HAVING count(*) = {}"
).format(sql.Literal(EVENTS_PER_TASK))
BASELINE_VISIBLE = sql.SQL("SELECT key, NULL::timestamptz FROM {} WHERE key = ANY(%s)").format(
    sql.Identifier(BASELINE_TABLE))


def run_assetlog(settings: Settings, rate: float, seconds: float, warmup: float, sample_every: int) -> list[float]:
    """Flows of materializing tasks at `rate` events/s with both consumers running; freshness in ms."""
    from assetlog.producer import Publisher, add_asset_metadata, flow, materialize, publishing

    deps = ["s3://fresh/raw/orders.csv", "pg://fresh/public/customers"]

    def task_for(key: str):
        def build() -> dict:
            add_asset_metadata(key, {"rows": 1})
            return {}
        return materialize(key, asset_deps=deps)(build)

    shared = [task_for(f"s3://fresh/daily/{i}.parquet") for i in range(200)]
    task_rate = rate / EVENTS_PER_TASK
    total = int(task_rate * (warmup + seconds))
    samples = {n: f"s3://fresh/sample/{n}.parquet" for n in range(0, total, sample_every)}
    tasks = [task_for(samples[n]) if n in samples else shared[n % len(shared)] for n in range(total)]

    env = child_env(settings)
    consumers = [subprocess.Popen([sys.executable, "-m", "assetlog", "consume", name, "--quiet"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for name in ("properties", "lineage")]
    observer = Observer(settings.postgres_dsn or "", ASSETLOG_VISIBLE).start()
    per_flow = max(1, int(task_rate / 10))  # ten flow runs a second, each flushed at its end
    measured_from = int(task_rate * warmup)
    try:
        with Publisher(settings) as publisher, publishing(publisher):
            @flow
            def batch(first: int) -> None:
                for n in range(first, min(total, first + per_flow)):
                    wait = started + n / task_rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    tasks[n]()
                    if n in samples and n >= measured_from:
                        observer.watch(samples[n])

            started = time.monotonic()
            for first in range(0, total, per_flow):
                batch(first)
            behind = time.monotonic() - (started + total / task_rate)
        observer.drain()
    finally:
        for process in consumers:
            process.terminate()
        for process in consumers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    if behind > 1.0:
        print(f"warning: the task loop ended {behind:.1f}s behind its schedule (machine too busy for the rate)")
    return [(seen - event_time) * 1000 for seen, event_time in observer.seen.values() if event_time is not None]


def run_baseline(settings: Settings, rate: float, seconds: float, warmup: float, sample_every: int) -> list[float]:
    """Raw produce at `rate` messages/s -> bare consumer -> INSERT + COMMIT of what it has; freshness in ms."""
    from confluent_kafka import Producer

    topic = f"{settings.topic_prefix}.baseline"
    consumer = subprocess.Popen([sys.executable, __file__, "--baseline-consumer", topic], env=child_env(settings),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None
        if consumer.stdout.readline().strip() != "ready":
            raise SystemExit(f"freshness_bench: the baseline consumer did not start: {consumer.stderr.read()}")
        producer = Producer(settings.kafka_client_config(defaults={"linger.ms": 0},
                                                         required={"enable.idempotence": True, "acks": "all"}))
        observer = Observer(settings.postgres_dsn or "", BASELINE_VISIBLE).start()
        sent: dict[str, float] = {}
        value = b"x" * 400  # about an encoded event's size
        total = int(rate * (warmup + seconds))
        measured_from = int(rate * warmup)
        started = time.monotonic()
        for n in range(total):
            wait = started + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            key = f"m{n}"
            if n % sample_every == 0 and n >= measured_from:
                sent[key] = time.time()
                observer.watch(key)
            producer.produce(topic, value, key.encode())
            producer.poll(0)
        producer.flush(30)
        observer.drain()
    finally:
        consumer.terminate()
        consumer.wait(30)
    return [(observer.seen[key][0] - at) * 1000 for key, at in sent.items()]


def baseline_consumer(topic: str) -> None:
    """Child process: consume and INSERT + COMMIT whatever has arrived, at once."""
    from confluent_kafka import Consumer

    settings = Settings.from_env()
    consumer = Consumer(settings.kafka_client_config(required={
        "group.id": f"{topic}.group", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([topic])
    with psycopg.connect(settings.require_postgres()) as conn:
        print("ready", flush=True)
        while True:
            messages = consumer.consume(num_messages=1000, timeout=0.001)
            rows = [(m.key().decode(),) for m in messages if m.error() is None]
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(sql.SQL("INSERT INTO {} (key) VALUES (%s)").format(
                        sql.Identifier(BASELINE_TABLE)), rows)
                conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per side (default 60)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default 5)")
    parser.add_argument("--sample-every", type=int, default=5, help="measure one task run in N (default 5)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--baseline-consumer", metavar="TOPIC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_consumer:
        baseline_consumer(args.baseline_consumer)
        return

    with scratch("freshness") as run:
        settings = run.event_topics(partitions=args.partitions)
        run.plain_topic("baseline", partitions=args.partitions)
        with psycopg.connect(run.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (key text PRIMARY KEY)").format(sql.Identifier(BASELINE_TABLE)))
        baseline = run_baseline(settings, args.rate, args.seconds, args.warmup, args.sample_every * 4)
        assetlog = run_assetlog(settings, args.rate, args.seconds, args.warmup, args.sample_every)

    results = {"assetlog": summary(assetlog), "baseline": summary(baseline)}
    for row in results.values():
        row["ratio_p50_to_baseline"] = row["p50_ms"] / results["baseline"]["p50_ms"]
        row["ratio_p99_to_baseline"] = row["p99_ms"] / results["baseline"]["p99_ms"]
    print(f"P5 freshness: {args.rate:.0f} events/s for {args.seconds:.0f}s (+{args.warmup:.0f}s warm-up), "
          f"both consumers running; task end -> all its rows visible")
    print(f"{'side':<10}{'samples':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p50 vs base':>13}"
          f"{'p99 vs base':>13}")
    for name, r in results.items():
        print(f"{name:<10}{r['samples']:>8}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{r['max_ms']:>9.1f}{r['ratio_p50_to_baseline']:>12.1f}x{r['ratio_p99_to_baseline']:>12.1f}x")
    print("baseline: raw produce (linger.ms=0) -> bare consumer -> INSERT + COMMIT at once, same rate")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "freshness_bench.json"
    out.write_text(json.dumps({
        "benchmark": "P5 freshness", "rate_events_per_second": args.rate, "seconds": args.seconds,
        "warmup_seconds": args.warmup, "sample_every": args.sample_every, "partitions": args.partitions,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "results": results,
        "goal": "p99 <= 250 ms from a task's end to its rows visible in PostgreSQL at 1k events/s",
    }, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
