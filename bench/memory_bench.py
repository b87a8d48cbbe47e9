"""M1/M2: peak memory of a consumer, a replay and a producer on a large stream: does it stay flat?

Each measured side is its own process, as users run it, its RSS and peak
(VmRSS, VmHWM) read from /proc every 0.2 s, with its progress; a command that
runs worker processes (replay) counts the sum over its processes:

- consumer: `assetlog consume properties|lineage --until-caught-up` over N
  published events (progress: the offsets it committed in PostgreSQL);
- replay: `assetlog replay all` over the same N events (when the command exists);
- producer: N/4 `@materialize` task calls (4 events each: materialization, 2
  dependencies, metadata) published through the SDK, the outbox and Kafka, as
  fast as the loop goes (progress: the worker's own count), in flow runs of
  1,000 task calls, and once more as one single flow run. A flow run holds
  every task run's result until it ends (lineage is traced by identity, as in
  Prefect), so only the first is expected flat; the second shows that cost.

Flat means bounded batches and buffers: the RSS in the last half of the
stream stays within 10% (+16 MiB) of the first half's. Physical baselines in
the same run: a bare confluent-kafka consumer reading the same N messages, and
raw `produce()` of N pre-encoded messages (librdkafka's own queue).

    eval "$(assetlog stack env)" && python bench/memory_bench.py [--events 1000000]
Prints a table and writes bench/results/memory_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from projection_bench import generate, publish
from support import child_env, scratch

from assetlog.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_SECONDS = 0.2
FLOW_SIZE = 1000  # task runs per flow run of the producer side (a flow holds its runs' results until it ends)
FLAT_FACTOR, FLAT_SLACK_MIB = 1.10, 16.0


def rss_mib(pid: int, field: str = "VmRSS") -> float | None:
    """Resident set size (VmRSS) or its high-water mark (VmHWM) of a running process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a replay runs worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


class ChildFailed(Exception):
    """A measured process exited with an error."""


def measure(command: list[str], env: dict[str, str], progress: Callable[[], float] | None = None) -> dict:
    """Run `command`, sampling (seconds, progress, RSS MiB); returns the curve, peak and output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        child = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        curve: list[tuple[float, float, float]] = []
        peak = [0.0, 0.0, 1.0]  # the main process's high-water mark, the tree's peak, most processes
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                tree = process_tree(child.pid)
                sizes = [size for size in (rss_mib(pid) for pid in tree) if size is not None]
                hwm = rss_mib(child.pid, "VmHWM")
                if sizes and hwm is not None:
                    curve.append((time.monotonic() - started, progress() if progress else 0.0, sum(sizes)))
                    peak[0] = max(peak[0], hwm)
                    peak[1] = max(peak[1], sum(sizes))
                    peak[2] = max(peak[2], len(sizes))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, _usage = os.wait4(child.pid, 0)
        done.set()
        sampler.join()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    if child.returncode != 0:
        raise ChildFailed(f"{' '.join(command[2:6])} failed ({child.returncode}): {errors.strip()[-300:]}")
    # The kernel's ru_maxrss would be no good: it keeps the high-water mark of the forked copy of
    # this (big) process from before exec. VmHWM belongs to the new program; sampled, it misses at
    # most the last SAMPLE_SECONDS.
    # A command with worker processes (replay) is counted whole: the sum of its processes' RSS.
    tree_peak = peak[1] if peak[2] > 1 else peak[0]
    return {"seconds": time.monotonic() - started, "peak_rss_mib": max(peak[0], tree_peak), "curve": curve,
            "processes": int(peak[2]), "output": output}


def flatness(curve: list[tuple[float, float, float]], by_progress: bool) -> dict:
    """Max RSS of the first and the last half of the work (by progress when known, else by time)."""
    if len(curve) < 4:
        return {"first_half_mib": float("nan"), "second_half_mib": float("nan"), "growth": float("nan"), "flat": True}
    axis = 1 if by_progress and curve[-1][1] > 0 else 0
    end = max(point[axis] for point in curve)
    first = [p[2] for p in curve if p[axis] <= end / 2] or [curve[0][2]]
    second = [p[2] for p in curve if p[axis] > end / 2] or [curve[-1][2]]
    early, late = max(first), max(second)
    return {"first_half_mib": early, "second_half_mib": late, "growth": late / early,
            "flat": late <= early * FLAT_FACTOR + FLAT_SLACK_MIB}


def committed(dsn: str, projection: str) -> Callable[[], float]:
    conn = psycopg.connect(dsn, autocommit=True)

    def progress() -> float:
        row = conn.execute("SELECT COALESCE(sum(next_offset), 0) FROM consumer_offsets WHERE projection = %s",
                           (projection,)).fetchone()
        return float(row[0]) if row else 0.0
    return progress


# --- children ------------------------------------------------------------------------------------------------

def child_producer(events: int, flow_size: int) -> None:
    """`events`/4 materializing task calls through the SDK, in flow runs of `flow_size` calls (0: one
    flow run for all); prints its own RSS curve."""
    from assetlog.producer import add_asset_metadata, flow, materialize

    deps = ["s3://memory/raw/orders.csv", "pg://memory/public/customers"]

    def task_for(key: str):
        def build() -> dict:
            add_asset_metadata(key, {"rows": 1})
            return {}
        return materialize(key, asset_deps=deps)(build)

    tasks = [task_for(f"s3://memory/daily/{i}.parquet") for i in range(500)]
    calls = events // 4
    curve = []

    @flow
    def emit(first: int, last: int) -> None:
        for n in range(first, last):
            tasks[n % len(tasks)]()
            if n % max(1, calls // 40) == 0:
                curve.append((n * 4, rss_mib(os.getpid())))

    size = flow_size or calls
    for first in range(0, calls, size):
        emit(first, min(calls, first + size))  # each flow run's end waits for its events' acknowledgement
    curve.append((calls * 4, rss_mib(os.getpid())))
    print(json.dumps({"curve": curve, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child_raw_producer(events: int) -> None:
    """Raw produce() of `events` pre-encoded messages (the same producer settings), then flush."""
    from confluent_kafka import Producer

    from assetlog.producer.delivery import PRODUCER_DEFAULTS, PRODUCER_REQUIRED

    settings = Settings.from_env()
    producer = Producer(settings.kafka_client_config(
        defaults={**PRODUCER_DEFAULTS, "delivery.report.only.error": False}, required=PRODUCER_REQUIRED))
    value = b"x" * 400
    topic = settings.topics.materializations
    for n in range(events):
        while True:
            try:
                producer.produce(topic, value, b"s3://memory/raw/%d" % (n % 500))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(120):
        raise SystemExit("raw producer: messages left undelivered")


def child_consume_only(expected: int) -> None:
    """A bare consumer reading every message of the event topics."""
    from confluent_kafka import Consumer, KafkaError

    settings = Settings.from_env()
    consumer = Consumer(settings.kafka_client_config(required={
        "group.id": f"memory-consume-only-{uuid.uuid4()}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "enable.partition.eof": True}))
    consumer.subscribe(list(settings.topics.events))
    seen = 0
    while seen < expected:
        for message in consumer.consume(num_messages=5000, timeout=0.1):
            if message.error() is None:
                message.value()
                seen += 1
            elif message.error().code() != KafkaError._PARTITION_EOF:
                raise SystemExit(f"Kafka: {message.error()}")
    consumer.close()


# --- main ----------------------------------------------------------------------------------------------------

def replay_available() -> bool:
    probe = subprocess.run([sys.executable, "-m", "assetlog", "replay", "--help"], capture_output=True, check=False)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per stream (default 1000000)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--child", choices=("producer", "raw-producer", "consume-only"), help=argparse.SUPPRESS)
    parser.add_argument("--flow-size", type=int, default=FLOW_SIZE, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "producer":
        child_producer(args.events, args.flow_size)
        return
    if args.child:
        {"raw-producer": child_raw_producer, "consume-only": child_consume_only}[args.child](args.events)
        return

    me = [sys.executable, str(Path(__file__).resolve())]
    results: dict[str, dict] = {}
    with scratch("memory") as work:
        settings = work.event_topics(partitions=args.partitions)
        producer_settings = work.event_topics("producer", partitions=args.partitions)
        dsn = work.dsn
        events = generate(args.events)
        publish(settings, events)
        n = len(events)
        del events
        env = child_env(settings)
        results["consume-only (baseline)"] = measure([*me, "--child", "consume-only", "--events", str(n)], env)
        for name in ("properties", "lineage"):
            run = measure([sys.executable, "-m", "assetlog", "consume", name, "--until-caught-up", "--quiet",
                           "--json"], env, committed(dsn, name))
            if json.loads(run["output"])["messages"] != n:
                raise SystemExit(f"memory_bench: {name} did not consume all {n} events")
            results[f"consumer {name}"] = {**run, **flatness(run["curve"], by_progress=True)}
        if replay_available():
            try:
                run = measure([sys.executable, "-m", "assetlog", "replay", "all", "--json"], env)
                results["replay all"] = {**run, **flatness(run["curve"], by_progress=False)}
            except ChildFailed as exc:
                print(f"replay all not measured: {exc}")
        producer_env = child_env(producer_settings)
        results["raw produce (baseline)"] = measure([*me, "--child", "raw-producer", "--events", str(n)],
                                                    producer_env)
        for label, flow_size, goal in ((f"producer, flows of {FLOW_SIZE:,}", FLOW_SIZE, True),
                                       ("producer, a single flow", 0, False)):
            run = measure([*me, "--child", "producer", "--events", str(n), "--flow-size", str(flow_size)],
                          producer_env)
            own = json.loads(run["output"])["curve"]
            results[label] = {**run, **flatness([(0.0, e, r) for e, r in own], by_progress=True), "goal": goal}

    print(f"M1/M2 memory: {n:,} events per stream, RSS and its high-water mark sampled every {SAMPLE_SECONDS}s")
    print(f"{'process':<26}{'procs':>6}{'seconds':>9}{'peak MiB':>10}{'1st half':>10}{'2nd half':>10}{'growth':>8}"
          f"{'flat':>6}{'vs base':>9}")
    for name, row in results.items():
        baseline = results["raw produce (baseline)" if "produc" in name else "consume-only (baseline)"]
        row["ratio_to_baseline"] = row["peak_rss_mib"] / baseline["peak_rss_mib"]
        flat = "" if "flat" not in row else ("yes" if row["flat"] else "NO")
        growth = f"{row['growth']:.2f}" if "growth" in row else ""
        first = f"{row['first_half_mib']:.0f}" if "first_half_mib" in row else ""
        second = f"{row['second_half_mib']:.0f}" if "second_half_mib" in row else ""
        print(f"{name:<26}{row['processes']:>6}{row['seconds']:>9.1f}{row['peak_rss_mib']:>10.0f}{first:>10}"
              f"{second:>10}{growth:>8}"
              f"{flat:>6}{row['ratio_to_baseline']:>8.1f}x")
    print(f"flat: the second half's max RSS <= {FLAT_FACTOR:.2f} x the first half's + {FLAT_SLACK_MIB:.0f} MiB")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "memory_bench.json"
    for row in results.values():
        row.pop("output", None)
    out.write_text(json.dumps({
        "benchmark": "M1/M2 memory", "events": n, "partitions": args.partitions,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "results": results,
        "goal": "RSS flat (bounded) over a 1M-event consumer run, replay and producer run",
    }, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
