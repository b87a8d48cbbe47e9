"""Prefect bridge benchmark: the time the bridge adds per materializing task of a real Prefect flow.

    python bench/prefect_bridge_bench.py [--tasks N] [--rounds R]

Needs the `prefect` extra and ASSETLOG_KAFKA_BOOTSTRAP (e.g. `eval "$(assetlog stack env)"`).
It creates topics under a private prefix, deletes them afterwards, prints a table and writes
JSON to bench/results/. Prefect runs as usual without a server of ours (it starts its own
temporary one) in a private PREFECT_HOME.

In one process, the same flow of N sequential `@materialize` tasks (each with an inferred
upstream, an explicit one with properties, and metadata: 4 Assetlog events per task) runs
R times with the bridge on and R times off, alternately. Two figures per task, p50/p99:
- task call: the whole Prefect task call as the flow sees it, bridge on vs off (Prefect's
  own cost, about a millisecond or more, is the baseline; the difference is noisy);
- emit: Prefect's `AssetContext.emit_events`, timed around the call, bridge on (Prefect's
  events + capture + mapping + `Publisher.publish()`) vs off (Prefect's events alone): the
  difference is what the bridge adds, without the noise of the rest of the task run.
- bridge own work: the part of `emit_events` that is the bridge's (mapping, ids, `publish()`),
  timed directly; the precise figure, since Prefect's own emission varies by milliseconds.
Delivery happens on the publisher's writer thread; the flush at the end is timed apart.
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

from assetlog.config import ENV_OUTBOX_DIR, ENV_TOPIC_PREFIX

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="materializing tasks per flow run")
    parser.add_argument("--rounds", type=int, default=3, help="flow runs per mode (on, off), alternating")
    args = parser.parse_args()

    with scratch("prefect", migrated=False) as work:  # the bridge needs Kafka only; the database stays empty
        settings = work.event_topics(partitions=3)
        os.environ.update({ENV_TOPIC_PREFIX: settings.topic_prefix, ENV_OUTBOX_DIR: str(settings.outbox_dir),
                           "PREFECT_HOME": str(work.workdir / "prefect-home"), "PREFECT_LOGGING_LEVEL": "WARNING",
                           "PREFECT_PLUGINS_ENABLED": "false"})  # installed by hand below, to switch it off and on
        result = measure(args.tasks, args.rounds)
    report(result)
    return 0


def measure(tasks: int, rounds: int) -> dict[str, Any]:
    import prefect
    from prefect import flow
    from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize
    from prefect.context import AssetContext

    from assetlog.integrations.prefect import bridge
    from assetlog.producer.publisher_context import current_publisher

    external = Asset(key="postgres://prod-db/public/users", properties=AssetProperties(name="Users", owners=["a"]))
    steps = [materialize(f"s3://bench/step-{i}.csv", asset_deps=[external], by="pandas")(_step(add_asset_metadata, i))
             for i in range(tasks)]
    emit_times: list[float] = []
    bridge_times: list[float] = []
    bridged_emit = AssetContext.emit_events  # replaced below, per mode
    publish_safely = bridge.publish_safely

    def timed_publish_safely(*args: Any) -> None:  # the bridge's own work, after Prefect's events
        started = time.perf_counter()
        try:
            publish_safely(*args)
        finally:
            bridge_times.append(time.perf_counter() - started)

    bridge.publish_safely = timed_publish_safely  # looked up by name on every call

    def timed_emit_events(self: Any, state: Any) -> None:
        started = time.perf_counter()
        try:
            bridged_emit(self, state)
        finally:
            emit_times.append(time.perf_counter() - started)

    @flow(name="bridge-bench")
    def pipeline() -> list[float]:
        durations = []
        value: Any = [0]
        for step in steps:
            started = time.perf_counter()
            value = step(value)
            durations.append(time.perf_counter() - started)
        return durations

    started = time.perf_counter()
    current_publisher()  # started once per process, by the first materializing task: timed apart
    publisher_start = time.perf_counter() - started
    modes: dict[str, dict[str, list[float]]] = {"on": {"task": [], "emit": [], "bridge": []},
                                                 "off": {"task": [], "emit": []}}
    for round_ in range(rounds * 2 + 1):
        mode = "on" if round_ % 2 else "off"  # round 0 warms up (temporary server, imports), off
        bridge.uninstall()
        if mode == "on":
            bridge.install()
        bridged_emit = AssetContext.emit_events
        AssetContext.emit_events = timed_emit_events  # type: ignore[method-assign]
        emit_times.clear()
        bridge_times.clear()
        durations = pipeline()
        AssetContext.emit_events = bridged_emit  # type: ignore[method-assign]
        if round_ == 0:
            continue
        modes[mode]["task"].extend(durations)
        modes[mode]["emit"].extend(emit_times)
        if mode == "on":
            modes[mode]["bridge"].extend(bridge_times)
    started = time.perf_counter()
    flushed = current_publisher().flush(60)
    flush_seconds = time.perf_counter() - started

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50_us": percentile(values, 0.5) * 1e6, "p99_us": percentile(values, 0.99) * 1e6,
                "mean_us": statistics.fmean(values) * 1e6, "n": len(values)}

    out: dict[str, Any] = {"prefect": prefect.__version__, "tasks": tasks, "rounds": rounds,
                           "flush_seconds": flush_seconds, "publisher_start_seconds": publisher_start, "flush_waiting": flushed.waiting}
    for mode, figures in modes.items():
        for what, values in figures.items():
            out[f"{what}_{mode}"] = summary(values)
    return out


def _step(add_asset_metadata: Any, index: int) -> Any:
    def step(value: list[int]) -> list[int]:
        add_asset_metadata(f"s3://bench/step-{index}.csv", {"rows": len(value), "step": index})
        return [*value, index]

    step.__name__ = f"step_{index}"
    return step


def report(result: dict[str, Any]) -> None:
    print(f"Prefect {result['prefect']}, {result['tasks']} tasks x {result['rounds']} flow runs per mode")
    print(f"{'figure':<34}{'bridge off':>14}{'bridge on':>14}{'added':>12}")
    for q in ("p50", "p99"):
        print(f"{'bridge own work, ' + q + ' (us)':<34}{'':>14}{result['bridge_on'][q + '_us']:>14.1f}"
              f"{result['bridge_on'][q + '_us']:>12.1f}")
    for what, label in (("emit", "emit_events, p50 (us)"), ("task", "task call, p50 (us)")):
        for q in ("p50", "p99"):
            off, on = result[f"{what}_off"][f"{q}_us"], result[f"{what}_on"][f"{q}_us"]
            print(f"{label.replace('p50', q):<34}{off:>14.1f}{on:>14.1f}{on - off:>12.1f}")
    print(f"publisher start (once per process, first materializing task): {result['publisher_start_seconds']:.3f} s")
    print(f"flush after the runs: {result['flush_seconds']:.3f} s, {result['flush_waiting']} events waiting")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prefect_bridge_bench.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
