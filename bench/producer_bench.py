"""Producer benchmark: Assetlog's publish path against raw Kafka produce(), and the
time a materializing task adds to a plain function call.

    python bench/producer_bench.py [--events N] [--tasks M] [--repeats R]

Needs ASSETLOG_KAFKA_BOOTSTRAP (e.g. `eval "$(assetlog stack env)"`). It creates
topics under a private prefix, deletes them afterwards, prints a table and
writes JSON to bench/results/.

Throughput, every side until every message is acknowledged (acks=all, idempotent,
the same librdkafka settings), from finished task runs shaped like the guide's
(1 asset, 2 upstreams, metadata: 4 events each):
- encode+produce: the publisher's own encoder and producer calls (produce_batch,
  error-only delivery reports), without the outbox;
- publish: the whole durable path, `Publisher.publish()` -> writer thread ->
  events -> Avro -> outbox (SQLite group commit) -> produce -> acknowledged ->
  outbox row deleted;
- raw: produce() of the very same pre-encoded bytes, poll(0), flush().
Added time per task: a @materialize task called in a flow (events published)
against the same function undecorated, per call, p50 and p99.
Flow cost per task (issue 15's figure): a flow of M materializing tasks, each with one
upstream and metadata (3 events), run end to end; the flow's wall time including its
final flush (every event acknowledged) divided by M, and the CPU time of all the
process's threads (writer and librdkafka included) divided by M; p99 of one task call.
Baselines in the same run: a bare function call, and raw produce() of the same bytes
(per task: 3 messages).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from support import scratch

from assetlog.config import Settings
from assetlog.producer import (
    Asset,
    AssetProperties,
    Publisher,
    add_asset_metadata,
    flow,
    materialize,
    publishing,
    task,
)
from assetlog.producer.delivery import PRODUCER_DEFAULTS, PRODUCER_REQUIRED
from assetlog.producer.encoding import encoder_for
from assetlog.producer.event_builders import (
    EXPLICIT,
    INFERRED,
    SUCCEEDED,
    EventIdSource,
    FinishedTaskRun,
    ProducerIdentity,
    Upstream,
    events_for,
    new_event_id,
)
from assetlog.producer.run_encoding import run_encoder

RESULTS = Path(__file__).resolve().parent / "results"
EVENTS_PER_RUN = 4


def finished_runs(count: int) -> list[FinishedTaskRun]:
    """Task runs shaped like the guide's: one asset, an inferred and an explicit upstream, metadata."""
    external = Asset(key="postgres://prod-db/public/users",
                     properties=AssetProperties(name="Users", owners=["platform-team"]))
    flow_run_id = new_event_id()
    # Tasks declare their assets once (at import), and runs reuse those objects.
    daily = [Asset(key=f"s3://bench/daily/{i}.parquet") for i in range(500)]
    raw = [Asset(key=f"s3://bench/raw/{i}.csv") for i in range(500)]
    runs = []
    for i in range(count):
        key = daily[i % 500].key
        runs.append(FinishedTaskRun(
            assets=(daily[i % 500],),
            upstream=(Upstream(raw[i % 500], INFERRED), Upstream(external, EXPLICIT, True)),
            metadata={key: '{"rows":1234,"seconds":0.42}'},
            status=SUCCEEDED, error=None, by="dbt", event_time=time.time_ns() // 1000,
            task_run_id=new_event_id(), task_name="build_daily", flow_run_id=flow_run_id, flow_name="bench"))
    return runs


def assetlog_rate(settings: Settings, runs: list[FinishedTaskRun]) -> float:
    with Publisher(settings, flush_timeout=60) as publisher:
        publisher.publish(runs[0])  # warm up: connection, topic metadata
        publisher.flush()
        start = time.perf_counter()
        for run in runs:
            publisher.publish(run)
        result = publisher.flush()
        elapsed = time.perf_counter() - start
        if result.waiting:
            raise SystemExit(f"producer_bench: {result.waiting} events not acknowledged ({result.reason})")
    return len(runs) * EVENTS_PER_RUN / elapsed


def encode_produce_rate(settings: Settings, runs: list[FinishedTaskRun]) -> float:
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_client_config(defaults=PRODUCER_DEFAULTS, required=PRODUCER_REQUIRED))
    for topic in settings.topics.events:  # warm up: connection, topic metadata
        producer.produce(topic, b"warm-up", b"warm-up")
    producer.flush(30)
    errors: list[object] = []

    def on_error(err: object, msg: object) -> None:
        errors.append(err)

    identity, ids, encode = ProducerIdentity.current(), EventIdSource(), run_encoder()
    start = time.perf_counter()
    for first in range(0, len(runs), 1250):  # the writer's group commits are about this size
        per_topic: dict[str, list[dict[str, bytes]]] = {}
        for run in runs[first:first + 1250]:
            for topic, key, value in encode(run, settings.topics, identity, ids):
                per_topic.setdefault(topic, []).append({"key": key, "value": value})
        for topic, batch in per_topic.items():
            producer.produce_batch(topic, batch, on_delivery=on_error)
        producer.poll(0)
    remaining = producer.flush(60)
    elapsed = time.perf_counter() - start
    if remaining or errors:
        raise SystemExit(f"producer_bench: encode+produce left {remaining} undelivered, {len(errors)} errors")
    return len(runs) * EVENTS_PER_RUN / elapsed


def pre_encoded(settings: Settings, runs: list[FinishedTaskRun]) -> list[tuple[str, bytes, bytes]]:
    identity = ProducerIdentity.current()
    messages = []
    for run in runs:
        memo: dict[int, bytes] = {}
        for event in events_for(run, settings.topics, identity):
            messages.append((event.topic, event.key.encode(), encoder_for(event.event_type)(event.record, memo)))
    return messages


def raw_rate(settings: Settings, messages: list[tuple[str, bytes, bytes]]) -> float:
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_client_config(defaults=PRODUCER_DEFAULTS, required=PRODUCER_REQUIRED))
    for topic in settings.topics.events:  # warm up: connection, topic metadata
        producer.produce(topic, messages[0][2], messages[0][1])
    producer.flush(30)
    start = time.perf_counter()
    for topic, key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(60)
    elapsed = time.perf_counter() - start
    if remaining:
        raise SystemExit(f"producer_bench: raw produce left {remaining} messages undelivered")
    return len(messages) / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def added_time(settings: Settings, calls: int) -> dict[str, float]:
    """Per-call nanoseconds of a plain function, a @task and a @materialize task inside a flow."""

    def body(i: int) -> int:
        return i + 1

    plain_task = task(body)
    materializing = materialize("s3://bench/added-time.parquet")(body)
    timings: dict[str, list[float]] = {"function": [], "task": [], "materialize": []}
    clock = time.perf_counter_ns

    @flow
    def bench_flow() -> None:
        for _round in range(3):  # interleave, so background noise hits all three alike
            for name, fn in (("function", body), ("task", plain_task), ("materialize", materializing)):
                samples = timings[name]
                for i in range(calls // 3):
                    start = clock()
                    fn(i)
                    samples.append(clock() - start)

    with Publisher(settings, flush_timeout=60) as publisher, publishing(publisher):
        bench_flow()
    base50, base99 = percentile(timings["function"], 0.5), percentile(timings["function"], 0.99)
    return {
        "calls": len(timings["materialize"]),
        "function_p50_us": base50 / 1000,
        "task_added_p50_us": (percentile(timings["task"], 0.5) - base50) / 1000,
        "materialize_added_p50_us": (percentile(timings["materialize"], 0.5) - base50) / 1000,
        "materialize_added_p99_us": (percentile(timings["materialize"], 0.99) - base99) / 1000,
    }


def flow_cost(settings: Settings, tasks: int) -> dict[str, float]:
    """Issue 15's figure: per task of a flow of materializing tasks with one upstream and metadata."""
    key = "s3://bench/flow-cost/out.parquet"

    @materialize(key, asset_deps=["s3://bench/flow-cost/in.csv"])
    def build(i: int) -> int:
        add_asset_metadata(key, {"rows": i})
        return i

    samples: list[int] = []
    clock = time.perf_counter_ns

    @flow
    def cost_flow(n: int) -> None:
        for i in range(n):
            start = clock()
            build(i)
            samples.append(clock() - start)

    with Publisher(settings, flush_timeout=60) as publisher, publishing(publisher):
        cost_flow(200)  # warm up: connection, topic metadata, caches
        samples.clear()
        cpu0, wall0 = os.times(), time.perf_counter()
        cost_flow(tasks)  # ends with the flow's flush: every event acknowledged
        wall, cpu1 = time.perf_counter() - wall0, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"flow_tasks": tasks, "flow_wall_us_per_task": wall / tasks * 1e6,
            "flow_cpu_us_per_task": cpu / tasks * 1e6, "flow_task_p50_us": percentile(samples, 0.5) / 1000,
            "flow_task_p99_us": percentile(samples, 0.99) / 1000}


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds of each of this process's threads, by kind (Linux /proc; empty elsewhere)."""
    kinds: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        # Python 3.11 does not name its threads for the OS: "other" is the publisher's writer thread.
        kind = "task thread" if tid == str(os.getpid()) else "librdkafka" if name.startswith("rdk:") else "other"
        kinds[kind] = kinds.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return kinds


def flow_with_body_cost(settings: Settings, tasks: int, body_us: float) -> dict[str, float]:
    """What a materializing task adds to a body that takes `body_us` of CPU: the realistic case,
    where the writer keeps up and commits (and librdkafka sends) small batches. Per task, added CPU
    of all threads over the same bodies called plainly in the same run, and by thread kind."""
    key = "s3://bench/flow-body/out.parquet"

    def body(i: int) -> int:
        end = time.thread_time() + body_us / 1e6
        while time.thread_time() < end:
            pass
        return i

    @materialize(key, asset_deps=["s3://bench/flow-body/in.csv"])
    def build(i: int) -> int:
        add_asset_metadata(key, {"rows": i})
        return body(i)

    @flow
    def body_flow(n: int, fn: Any) -> None:
        for i in range(n):
            fn(i)

    with Publisher(settings, flush_timeout=60) as publisher, publishing(publisher):
        body_flow(200, build)  # warm up
        cpu0 = os.times()
        body_flow(tasks, body)
        cpu1, threads1 = os.times(), thread_cpu_seconds()
        body_flow(tasks, build)
        cpu2, threads2 = os.times(), thread_cpu_seconds()
    plain = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / tasks * 1e6
    materializing = (cpu2.user + cpu2.system - cpu1.user - cpu1.system) / tasks * 1e6
    by_kind = {f"body_flow_{kind.replace(' ', '_')}_cpu_us_per_task": (threads2[kind] - threads1.get(kind, 0.0)) / tasks * 1e6
               for kind in threads2}
    return {"body_us": body_us, "body_flow_plain_cpu_us_per_task": plain,
            "body_flow_added_cpu_us_per_task": materializing - plain, **by_kind}


def raw_cost_per_task(settings: Settings, tasks: int) -> dict[str, float]:
    """The physical baseline of `flow_cost`: produce() of 3 messages per task, wall and CPU per task."""
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_client_config(defaults=PRODUCER_DEFAULTS, required=PRODUCER_REQUIRED))
    topics = (settings.topics.materializations, settings.topics.dependencies, settings.topics.metadata)
    value, key = b"x" * 180, b"s3://bench/flow-cost/out.parquet"
    for topic in topics:
        producer.produce(topic, value, key)
    producer.flush(30)
    cpu0, wall0 = os.times(), time.perf_counter()
    for _ in range(tasks):
        for topic in topics:
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    wall, cpu1 = time.perf_counter() - wall0, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"raw_wall_us_per_task": wall / tasks * 1e6, "raw_cpu_us_per_task": cpu / tasks * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per throughput run (default 100000)")
    parser.add_argument("--tasks", type=int, default=6_000, help="task calls for the added-time measure")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per side; the median is kept")
    parser.add_argument("--flow-tasks", type=int, default=20_000, help="tasks in the flow-cost run")
    parser.add_argument("--only-flow", action="store_true", help="only the flow cost and its baselines")
    parser.add_argument("--flow-body-us", type=float, default=0.0,
                        help="with --only-flow: also a flow whose task bodies take this much CPU (us), per task")
    parser.add_argument("--flow-body-tasks", type=int, default=0,
                        help="tasks in that flow (default: a quarter of --flow-tasks)")
    args = parser.parse_args(argv)
    with scratch("producer", migrated=False) as work:  # the producer needs Kafka only; the database stays empty
        settings = work.event_topics(partitions=3)
        if args.only_flow:
            flow_runs = [flow_cost(settings, args.flow_tasks) for _ in range(args.repeats)]
            raw = raw_cost_per_task(settings, args.flow_tasks)
            report_flow(flow_runs, raw)
            if args.flow_body_us > 0:
                body_tasks = args.flow_body_tasks or args.flow_tasks // 4
                for name, value in flow_with_body_cost(settings, body_tasks, args.flow_body_us).items():
                    print(f"  {name:46} {value:>10.1f}")
            return 0
        runs = finished_runs(max(1, args.events // EVENTS_PER_RUN))
        messages = pre_encoded(settings, runs)
        assetlog_rates, encode_rates, raw_rates = [], [], []
        for _ in range(args.repeats):  # interleaved, so background load hits all three alike
            raw_rates.append(raw_rate(settings, messages))
            encode_rates.append(encode_produce_rate(settings, runs))
            assetlog_rates.append(assetlog_rate(settings, runs))
        added = added_time(settings, args.tasks)
        flow_runs = [flow_cost(settings, args.flow_tasks) for _ in range(args.repeats)]
        raw_task = raw_cost_per_task(settings, args.flow_tasks)
    ours, encoded, raw = (statistics.median(r) for r in (assetlog_rates, encode_rates, raw_rates))
    result = {
        "events": len(messages), "repeats": args.repeats, "events_per_task_run": EVENTS_PER_RUN,
        "encode_produce_events_per_s": round(encoded), "publish_events_per_s": round(ours),
        "raw_produce_events_per_s": round(raw),
        "encode_produce_ratio": round(encoded / raw, 3), "publish_ratio": round(ours / raw, 3),
        "encode_produce_runs": [round(r) for r in encode_rates],
        "publish_runs": [round(r) for r in assetlog_rates], "raw_runs": [round(r) for r in raw_rates],
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in added.items()},
        **flow_summary(flow_runs, raw_task),
        "python": sys.version.split()[0],
    }
    print(f"{'measure':48} {'value':>10}")
    print(f"{'raw produce() of the same bytes, ev/s':48} {result['raw_produce_events_per_s']:>10,}")
    print(f"{'Assetlog encode+produce, ev/s':48} {result['encode_produce_events_per_s']:>10,}")
    print(f"{'  ratio to raw':48} {result['encode_produce_ratio']:>10}")
    print(f"{'Assetlog publish incl. durable outbox, ev/s':48} {result['publish_events_per_s']:>10,}")
    print(f"{'  ratio to raw':48} {result['publish_ratio']:>10}")
    print(f"{'plain function call p50, us':48} {result['function_p50_us']:>10}")
    print(f"{'added by @task p50, us':48} {result['task_added_p50_us']:>10}")
    print(f"{'added by @materialize p50, us':48} {result['materialize_added_p50_us']:>10}")
    print(f"{'added by @materialize p99, us':48} {result['materialize_added_p99_us']:>10}")
    report_flow(flow_runs, raw_task, result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"producer_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


def flow_summary(flow_runs: list[dict[str, float]], raw: dict[str, float]) -> dict[str, object]:
    """Medians over the repeats (each run's figures kept too), with the same-run baselines."""
    median = {k: round(statistics.median(r[k] for r in flow_runs), 2) for k in flow_runs[0] if k != "flow_tasks"}
    return {"flow_tasks": flow_runs[0]["flow_tasks"], **median,
            "flow_total_us_per_task": round(median["flow_wall_us_per_task"] + median["flow_cpu_us_per_task"], 2),
            "flow_runs": [{k: round(v, 2) for k, v in r.items()} for r in flow_runs],
            **{k: round(v, 2) for k, v in raw.items()}}


def report_flow(flow_runs: list[dict[str, float]], raw: dict[str, float],
                into: dict[str, object] | None = None) -> None:
    summary = flow_summary(flow_runs, raw)
    if into is not None:
        into.update(summary)
    print(f"{'flow of materializing tasks (1 upstream + metadata)':48} {summary['flow_tasks']:>10} tasks")
    for label, name in (("  wall incl. final flush, us/task", "flow_wall_us_per_task"),
                        ("  CPU of all threads, us/task", "flow_cpu_us_per_task"),
                        ("  one task call p50, us", "flow_task_p50_us"),
                        ("  one task call p99, us", "flow_task_p99_us"),
                        ("  raw produce() 3 msgs: wall us/task", "raw_wall_us_per_task"),
                        ("  raw produce() 3 msgs: CPU us/task", "raw_cpu_us_per_task")):
        print(f"{label:48} {summary[name]:>10}")
    print("  runs: " + "; ".join(f"wall {r['flow_wall_us_per_task']:.1f} cpu {r['flow_cpu_us_per_task']:.1f} "
                                 f"p99 {r['flow_task_p99_us']:.0f}" for r in summary["flow_runs"]))  # type: ignore[union-attr]


if __name__ == "__main__":
    raise SystemExit(main())
