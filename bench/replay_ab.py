"""P3 A/B: `replay all` of the same events by two installations, alternated, in one run.

On a shared machine a replay's wall time swings by 2x from one run to the
next, so a change is judged by pairs run back to back on the same data:
publishes N events once (P2's generator) into a fresh database and topic
prefix, then runs `assetlog replay all` with each interpreter in turn (`--old`
is, e.g., the virtualenv of a checkout of the base commit), `--rounds` times,
alternating which goes first. Each replay rebuilds the tables from the topics
and swaps them in over the previous replay's.

Beside each run: the phases (read, deferred indexes, swap), CPU seconds per
1M events of the command (worker processes included) and of its PostgreSQL
backends (also by backend: control, `.lineage` and `.properties` writers,
`.indexes` builds), and the load average at its start; then the median of each side and
new/old ratios of the pairs.

    eval "$(assetlog stack env)" && python bench/replay_ab.py --old ../base/.venv/bin/python \\
        [--new .venv/bin/python] [--events 300000] [--rounds 3]
Writes bench/results/replay_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

from projection_bench import generate, publish
from replay_bench import run
from support import scratch

RESULTS = Path(__file__).resolve().parent / "results"


def one(settings, python: str, n: int, extra: list[str]) -> dict:
    load = os.getloadavg()[0]
    report, wall, rss, cpu = run(settings, "replay", "all", *extra, python=python)
    if report["messages"] != n:
        raise SystemExit(f"{python}: replay all read {report['messages']} of {n}")
    per_m = 1e6 / n
    return {"load": load, "wall_seconds": wall, "command_seconds": report["seconds"], "phases": report["phases"],
            "workers": report.get("workers"), "peak_rss_mib": rss,
            "cpu_per_million": (cpu["cpu_seconds"] or 0) * per_m,
            "postgres_cpu_per_million": (cpu["postgres_cpu_seconds"] or 0) * per_m,
            "postgres_cpu_per_million_by_application": {name: seconds * per_m for name, seconds
                                                        in cpu["postgres_cpu_by_application"].items()},
            "command_per_million": report["seconds"] * per_m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="python of the installation to compare against")
    parser.add_argument("--new", default=sys.executable, help="python of the installation measured (default: this one)")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-args", default="", help="extra arguments for the new side's `replay all`")
    args = parser.parse_args()
    sides = {"new": (args.new, args.new_args.split()), "old": (args.old, [])}
    runs: dict[str, list[dict]] = {"new": [], "old": []}
    with scratch("replay-ab") as work:
        settings = work.event_topics(partitions=args.partitions)
        events = generate(args.events)
        publish(settings, events)
        n = len(events)
        del events
        run(settings, "replay", "all", python=args.new)  # warm-up: the broker's page cache, the first swap
        for index in range(args.rounds):
            order = ("new", "old") if index % 2 == 0 else ("old", "new")
            for side in order:
                python, extra = sides[side]
                result = one(settings, python, n, extra)
                runs[side].append(result)
                phases = ", ".join(f"{k} {v:.1f}" for k, v in result["phases"].items())
                backends = ", ".join(f"{name.removeprefix('assetlog.replay') or 'control'} {seconds:.1f}" for name, seconds
                                     in sorted(result["postgres_cpu_per_million_by_application"].items()))
                print(f"round {index + 1} {side}: load {result['load']:.1f}, {result['command_per_million']:.0f} s per "
                      f"1M end to end ({phases} s), CPU s/1M {result['cpu_per_million']:.1f} + "
                      f"{result['postgres_cpu_per_million']:.1f} ({backends})", flush=True)

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    def total(r: dict) -> float:
        return r["cpu_per_million"] + r["postgres_cpu_per_million"]

    print(f"\n{n} events, {args.rounds} rounds, medians:")
    for side in ("new", "old"):
        print(f"  {side}: {median(side, 'command_per_million'):.1f} s per 1M end to end, CPU s/1M "
              f"{median(side, 'cpu_per_million'):.1f} + {median(side, 'postgres_cpu_per_million'):.1f}")
    wall = [a["command_seconds"] / b["command_seconds"] for a, b in zip(runs["new"], runs["old"], strict=True)]
    cpu = [total(a) / total(b) for a, b in zip(runs["new"], runs["old"], strict=True)]
    print(f"  new/old per pair: wall {', '.join(f'{r:.2f}' for r in wall)}; CPU {', '.join(f'{r:.2f}' for r in cpu)}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay_ab.json").write_text(json.dumps({
        "benchmark": "P3 A/B", "events": n, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "old": args.old, "new": args.new, "runs": runs,
        "ratios": {"wall": wall, "cpu": cpu}}, indent=2))


if __name__ == "__main__":
    main()
