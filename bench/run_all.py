"""Every benchmark, one after the other, and one table: figure, goal, measured, baseline, ratio, met?

Each benchmark runs as its own process (its own table is shown as it goes)
and measures its physical baseline in the same run; this script reads the JSON
each one writes and lines the figures up against the goals of the issue:

    P1 producer    encode+produce >= 0.5x raw produce(); < 20 us added per task (p50); a flow of
                   materializing tasks (1 upstream + metadata) <= 25 us per task (wall incl. flush,
                   and CPU of all threads), p99 of one task <= 250 us
    P2 projection  lineage consumer >= 0.8x COPY of the same rows (history indexes) and >= 40k ev/s;
                   properties >= 50k ev/s; beside them COPY with and without the history indexes, bare
                   consume, and CPU seconds per 1M events of each process and of PostgreSQL
    P3 replay      1M events rebuilt (`replay all`, indexes included, the live consumers running beside it)
                   in <= 25 s; CPU as for P2
    P4 query       10-hop lineage on 100k assets / 1M edges, p50 <= 20 ms
    P5 freshness   task end -> rows visible at 1k events/s, p99 <= 250 ms
    M1/M2 memory   consumer, replay and producer RSS flat over 1M events
    R1 recovery    lineage consumer SIGKILLed, restarted at once -> first new row, p50/max of 10 (~2 s goal)
    Q1/W1          query and web view on the 100k-asset / 300k-edge graph (no goal in the issue)
    O1             OpenLineage events/s through the HTTP receiver, against raw produce and HTTP alone (no goal)

Run against the stack the environment names (takes about half an hour at full size):
    eval "$(assetlog stack env)" && python bench/run_all.py [--quick] [--only P1,P5]
`--quick` uses small sizes (a smoke test of every benchmark, a few minutes; its
figures are not comparable with the goals). Writes bench/results/run_all.json
and run_all.md (the table as Markdown, for bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    result: str  # JSON file name in bench/results ("*" picks the newest match written by this run)
    rows: Callable[[dict[str, Any]], list[dict[str, Any]]]


def row(figure: str, goal: str, measured: float, unit: str, baseline: float | None = None,
        baseline_label: str = "", ratio: float | None = None, met: bool | None = None) -> dict[str, Any]:
    return {"figure": figure, "goal": goal, "measured": measured, "unit": unit, "baseline": baseline,
            "baseline_label": baseline_label, "ratio": ratio, "met": met}


def producer_rows(r: dict) -> list[dict]:
    raw = r["raw_produce_events_per_s"]
    return [
        row("P1 encode+produce", ">= 0.5x raw", r["encode_produce_events_per_s"], "ev/s", raw, "raw produce()",
            r["encode_produce_ratio"], r["encode_produce_ratio"] >= 0.5),
        row("P1 publish, durable outbox", "(info)", r["publish_events_per_s"], "ev/s", raw, "raw produce()",
            r["publish_ratio"]),
        row("P1 added per task p50", "< 20 us", r["materialize_added_p50_us"], "us", r["function_p50_us"],
            "plain call", None, r["materialize_added_p50_us"] < 20),
        row("P1 added per task p99", "(info)", r["materialize_added_p99_us"], "us"),
        row("P1 flow cost per task, wall incl. flush", "<= 25 us", r["flow_wall_us_per_task"], "us",
            r["raw_wall_us_per_task"], "raw produce() 3 msgs", None, r["flow_wall_us_per_task"] <= 25),
        row("P1 flow cost per task, CPU all threads", "<= 25 us", r["flow_cpu_us_per_task"], "us",
            r["raw_cpu_us_per_task"], "raw produce() 3 msgs", None, r["flow_cpu_us_per_task"] <= 25),
        row("P1 one task of the flow p99", "<= 250 us", r["flow_task_p99_us"], "us", None, "", None,
            r["flow_task_p99_us"] <= 250),
    ]


def cpu_note(result: dict) -> str:
    """'process X + PostgreSQL Y' CPU seconds per 1M events, when the benchmark measured them."""
    own, pg = result.get("cpu_seconds_per_million"), result.get("postgres_cpu_seconds_per_million")
    if own is None:
        return ""
    return f"process {own:,.1f} + PostgreSQL {pg:,.1f}" if pg is not None else f"process {own:,.1f}"


def cpu_row(figure: str, result: dict) -> list[dict]:
    """CPU seconds per 1M events of the process and of PostgreSQL, beside a throughput figure."""
    own, pg = result.get("cpu_seconds_per_million"), result.get("postgres_cpu_seconds_per_million")
    if own is None:
        return []
    return [{**row(f"{figure}, CPU s per 1M events", "(info)", own + (pg or 0), "s"), "note": cpu_note(result)}]


def projection_rows(r: dict) -> list[dict]:
    res = r["results"]
    copy = res["copy"]["events_per_second"]
    goals = {"properties": (">= 50k ev/s", lambda rate, ratio: rate >= 50_000),
             "lineage": (">= 0.8x COPY and >= 40k ev/s", lambda rate, ratio: ratio >= 0.8 and rate >= 40_000)}
    rows = []
    for name, (goal, met) in goals.items():
        rate, ratio = res[name]["events_per_second"], res[name]["ratio_to_copy"]
        rows.append(row(f"P2 {name} consumer", goal, rate, "ev/s", copy, "COPY same rows (history indexes)", ratio,
                        met(rate, ratio)))
        rows += cpu_row(f"P2 {name} consumer", res[name])
    no_index = res.get("copy-no-index")
    if no_index is not None:
        rows.append(row("P2 COPY into the history table with its indexes", "(info)", copy, "ev/s",
                        no_index["events_per_second"], "COPY without indexes", copy / no_index["events_per_second"]))
        rows += cpu_row("P2 COPY with indexes", res["copy"]) + cpu_row("P2 COPY without indexes", no_index)
    consume = res.get("consume-only")
    if consume is not None:
        rows.append(row("P2 bare Kafka consume", "(info)", consume["events_per_second"], "ev/s"))
    rows.append(row("P2 row-by-row INSERT", "(info)", res["row-by-row"]["events_per_second"], "ev/s", copy,
                    "COPY same rows", res["row-by-row"]["ratio_to_copy"]))
    return rows


def replay_rows(r: dict) -> list[dict]:
    res, n = r["results"], r["events"]
    rows = []
    for name in ("all", "properties", "lineage"):
        replay = res.get(f"replay {name}")
        if replay is None:
            continue
        per_million = replay["command_seconds"] * 1_000_000 / n
        live = res["live both, one after the other"] if name == "all" else res[f"live {name}"]
        rows.append(row(f"P3 replay {name}, s per 1M events", "<= 25 s" if name == "all" else "(info)",
                        per_million, "s", live["seconds"] * 1_000_000 / n, "live consumers",
                        replay["ratio_to_live"], per_million <= 25 if name == "all" else None))
        rows += cpu_row(f"P3 replay {name}", replay)
    for name in ("properties", "lineage"):
        rows += cpu_row(f"P3 live {name} consumer", res.get(f"live {name}", {}))
    return rows


def query_rows(r: dict, label: str, goal: bool) -> list[dict]:
    res = r["results"]
    rows = []
    for direction in ("upstream", "downstream"):
        q = res[direction]
        rows.append(row(f"{label} {r['depth']}-hop {direction} p50", "<= 20 ms" if goal else "(info)", q["p50_ms"],
                        "ms", q.get("floor_p50_ms"), "fetch answer rows", q.get("ratio_to_floor"),
                        q["p50_ms"] <= 20 if goal else None))
        rows.append(row(f"{label} {r['depth']}-hop {direction} p99", "(info)", q["p99_ms"], "ms"))
    return rows


def freshness_rows(r: dict) -> list[dict]:
    ours, base = r["results"]["assetlog"], r["results"]["baseline"]
    return [
        row("P5 freshness p99", "<= 250 ms", ours["p99_ms"], "ms", base["p99_ms"], "raw Kafka->PG",
            ours["ratio_p99_to_baseline"], ours["p99_ms"] <= 250),
        row("P5 freshness p50", "(info)", ours["p50_ms"], "ms", base["p50_ms"], "raw Kafka->PG",
            ours["ratio_p50_to_baseline"]),
    ]


def memory_rows(r: dict) -> list[dict]:
    res = r["results"]
    rows = []
    for name, value in res.items():
        if "baseline" in name:
            continue
        base = res["raw produce (baseline)" if "produc" in name else "consume-only (baseline)"]
        figure = "M2" if "produc" in name else "M1"
        goal = value.get("goal", True)
        rows.append(row(f"{figure} {name} peak RSS", "flat" if goal else "(info)", value["peak_rss_mib"], "MiB",
                        base["peak_rss_mib"], "bare client", value["ratio_to_baseline"],
                        value.get("flat") if goal else None))
        rows[-1]["note"] = f"halves {value['first_half_mib']:.0f}->{value['second_half_mib']:.0f} MiB"
    return rows


def recovery_rows(r: dict) -> list[dict]:
    res = r["results"]
    ours, base = res["static"], res.get("dynamic")
    rows = []
    for stat, goal in (("p50_ms", "<= 2000 ms"), ("max_ms", "(info)")):
        rows.append(row(f"R1 crash recovery {stat[:-3]}", goal, ours[stat], "ms",
                        base[stat] if base else None, "session expiry (old default)",
                        ours[stat] / base[stat] if base else None, ours[stat] <= 2000 if stat == "p50_ms" else None))
    return rows


def web_rows(r: dict) -> list[dict]:
    res = r["results"]
    page = res["asset page"]
    return [row("W1 asset page p50", "(info)", page["p50_ms"], "ms",
                page["queries_p50_ms"] + page["dot_p50_ms"] + res["http floor (/healthz)"]["p50_ms"],
                "queries+dot+http", r["page_vs_baseline"])]


def openlineage_rows(r: dict) -> list[dict]:
    measured = r["receiver_events_per_s_in_topics"]
    return [
        row("O1 OpenLineage HTTP receiver", "(info)", measured, "ev/s", r["raw_produce_events_per_s"],
            "raw produce()", r["ratio"]),
        row("O1 receiver vs HTTP alone", "(info)", measured, "ev/s", r["http_floor_requests_per_s"],
            "GET /healthz", r["ratio_to_http_floor"]),
    ]


BENCHES = [
    Bench("P1", "producer_bench.py", (), ("--events", "20000", "--tasks", "3000", "--repeats", "1"),
          "producer_bench-*.json", producer_rows),
    Bench("P2", "projection_bench.py", ("--events", "200000"), ("--events", "20000"), "projection_bench.json",
          projection_rows),
    Bench("P3", "replay_bench.py", ("--events", "1000000", "--live-beside"),
          ("--events", "50000", "--only", "all", "--live-beside"),
          "replay_bench.json", replay_rows),
    Bench("P4", "query_bench.py", ("--edges", "1000000", "--database", "assetlog_bench_query_1m", "--reuse"),
          ("--assets", "5000", "--edges", "50000", "--queries", "50", "--naive", "5",
           "--database", "assetlog_bench_query_quick", "--reuse"),
          "query_bench.json", lambda r: query_rows(r, "P4", True)),
    Bench("P5", "freshness_bench.py", (), ("--seconds", "10", "--warmup", "3"), "freshness_bench.json",
          freshness_rows),
    Bench("R1", "recovery_bench.py", (), ("--kills", "3"), "recovery_bench.json", recovery_rows),
    Bench("M", "memory_bench.py", (), ("--events", "50000"), "memory_bench.json", memory_rows),
    Bench("Q1", "query_bench.py", ("--reuse",), ("--assets", "5000", "--queries", "50", "--naive", "5",
                                                 "--database", "assetlog_bench_query_small", "--reuse"),
          "query_bench.json", lambda r: query_rows(r, "Q1", False)),
    Bench("W1", "web_bench.py", (), ("--requests", "30", "--database", "assetlog_bench_query_small"),
          "web_bench.json", web_rows),
    Bench("O1", "openlineage_bench.py", (), ("--events", "1000"), "openlineage_bench.json", openlineage_rows),
]


def newest_result(pattern: str, since: float) -> Path | None:
    found = [p for p in RESULTS.glob(pattern) if p.stat().st_mtime >= since]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_bench(bench: Bench, quick: bool) -> dict[str, Any]:
    script = BENCH / bench.script
    if not script.exists():
        return {"name": bench.name, "status": f"skipped: {bench.script} does not exist", "rows": []}
    args = bench.quick if quick else bench.full
    command = [sys.executable, str(script), *args]
    print(f"\n=== {bench.name}: {bench.script} {' '.join(args)}", flush=True)
    started = time.time()
    process = subprocess.run(command, cwd=BENCH.parent, check=False)
    seconds = time.time() - started
    if process.returncode != 0:
        return {"name": bench.name, "status": f"failed (exit {process.returncode})", "seconds": seconds, "rows": []}
    result = newest_result(bench.result, started)
    if result is None:
        return {"name": bench.name, "status": f"no {bench.result} written", "seconds": seconds, "rows": []}
    data = json.loads(result.read_text())
    return {"name": bench.name, "status": "ok", "seconds": seconds, "command": " ".join(["python", f"bench/{bench.script}", *args]),
            "rows": bench.rows(data), "raw": data}


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ev/s":
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def table(rows: list[dict], markdown: bool) -> str:
    header = ["figure", "goal", "measured", "baseline (same run)", "ratio", "met?"]
    lines = []
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        measured = f"{fmt(r['measured'], r['unit'])} {r['unit']}"
        if r.get("note"):
            measured += f" ({r['note']})"
        baseline = f"{fmt(r['baseline'], r['unit'])} {r['unit']} {r['baseline_label']}" if r["baseline"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        lines.append([r["figure"], r["goal"], measured, baseline, ratio, met])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_mib": memory, "machine": platform.machine(),
            "python": platform.python_version(), "load_average": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not the goals' sizes")
    parser.add_argument("--only", help="comma-separated benchmarks to run (P1,P2,P3,P4,P5,M,Q1,W1,O1)")
    args = parser.parse_args()
    wanted = {name.strip().upper() for name in args.only.split(",")} if args.only else None
    if wanted and wanted - {b.name for b in BENCHES}:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(wanted - {b.name for b in BENCHES}))}")
    if "ASSETLOG_KAFKA_BOOTSTRAP" not in os.environ or "ASSETLOG_POSTGRES_DSN" not in os.environ:
        parser.error('set ASSETLOG_KAFKA_BOOTSTRAP and ASSETLOG_POSTGRES_DSN (eval "$(assetlog stack env)")')
    started = datetime.now(UTC)
    before = machine()
    runs = [run_bench(b, args.quick) for b in BENCHES if wanted is None or b.name in wanted]
    rows = [r for run in runs for r in run["rows"]]
    after = machine()
    print(f"\n=== Assetlog benchmarks, {started:%Y-%m-%d %H:%M} UTC, {before['cpus']} cores, "
          f"{before['memory_mib'] / 1024:.0f} GiB, load {before['load_average'][0]:.1f} -> {after['load_average'][0]:.1f}"
          f"{', QUICK sizes (not comparable with the goals)' if args.quick else ''}")
    print(table(rows, markdown=False))
    for run in runs:
        if run["status"] != "ok":
            print(f"{run['name']}: {run['status']}")
    missed = [r["figure"] for r in rows if r["met"] is False]
    print(f"goals met: {sum(1 for r in rows if r['met'])} of {sum(1 for r in rows if r['met'] is not None)}"
          + (f"; missed: {', '.join(missed)}" if missed else ""))
    RESULTS.mkdir(exist_ok=True)
    summary = {"date": started.isoformat(timespec="seconds"), "quick": args.quick, "machine": before,
               "load_average_after": after["load_average"], "rows": rows,
               "runs": [{k: v for k, v in run.items() if k != "rows"} for run in runs]}
    (RESULTS / "run_all.json").write_text(json.dumps(summary, indent=2, default=str))
    (RESULTS / "run_all.md").write_text(table(rows, markdown=True) + "\n")
    print(f"written {RESULTS / 'run_all.json'} and run_all.md")
    return 0 if all(run["status"] == "ok" for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
