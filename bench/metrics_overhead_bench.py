"""OV1: what the metrics port costs a consumer: throughput with and without `--metrics-port`, in one run.

Publishes N realistic events (projection_bench's generator) once, then runs
`assetlog consume lineage --until-caught-up` as a process over all of them
several times, alternating two variants, each time into a fresh, empty copy of
a migrated database (so every run projects the same events from offset 0):

- baseline: no metrics port (the counters are still updated in memory, as they
  always are);
- metrics: `--metrics-port` with the lag measured against the broker every
  second (`--lag-interval-seconds 1`) and /metrics scraped every second by this
  script (a harsher schedule than Prometheus' usual 15 s).

Reports each variant's median events/s (from the first message to the last
commit, as the consumer reports it) and the ratio. The machine is usually
shared: alternating the variants spreads the noise over both.

    eval "$(assetlog stack env)" && python bench/metrics_overhead_bench.py [--events 100000] [--rounds 3]
Writes bench/results/metrics_overhead_bench.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from projection_bench import generate, publish
from support import Scratch, child_env, scratch

from assetlog.compose.processes import free_port

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("baseline", "metrics")


def scrape_every_second(port: int, stop: threading.Event, scrapes: list[int]) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                answer.read()
            scrapes[0] += 1
        except OSError:  # not listening yet, or gone already
            pass


def consume_once(work: Scratch, variant: str, run: int, expected: int) -> dict:
    env = child_env(work.settings)
    command = [sys.executable, "-m", "assetlog", "consume", "lineage", "--until-caught-up", "--quiet", "--json"]
    stop, scrapes = threading.Event(), [0]
    scraper = None
    if variant == "metrics":
        port = free_port()
        command += ["--metrics-port", str(port), "--lag-interval-seconds", "1"]
        scraper = threading.Thread(target=scrape_every_second, args=(port, stop, scrapes), daemon=True)
        scraper.start()
    with work.database_copy(str(run)) as env["ASSETLOG_POSTGRES_DSN"]:
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
        finally:
            stop.set()
            if scraper is not None:
                scraper.join()
    if done.returncode != 0:
        raise SystemExit(f"metrics_overhead_bench: the consumer failed:\n{done.stderr[-2000:]}")
    stats = json.loads(done.stdout)
    if stats["messages"] != expected:
        raise SystemExit(f"metrics_overhead_bench: {stats['messages']} of {expected} messages projected")
    return {"variant": variant, "events_per_second": stats["events_per_second"],
            "busy_seconds": stats["busy_seconds"], "scrapes": scrapes[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to publish and project (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, alternating (default 3)")
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()

    runs: list[dict] = []
    with scratch("metrics-overhead") as work:
        settings = work.event_topics(partitions=args.partitions)
        events = generate(args.events)
        publish(settings, events)
        n = len(events)
        del events
        for round_ in range(args.rounds):
            for i, variant in enumerate(VARIANTS if round_ % 2 == 0 else reversed(VARIANTS)):
                runs.append(consume_once(work, variant, round_ * 2 + i, n))
                print(f"  round {round_ + 1} {variant:<9}{runs[-1]['events_per_second']:>10,.0f} events/s "
                      f"({runs[-1]['scrapes']} scrapes)", flush=True)

    medians = {v: statistics.median(r["events_per_second"] for r in runs if r["variant"] == v) for v in VARIANTS}
    ratio = medians["metrics"] / medians["baseline"]
    print(f"OV1 metrics overhead: lineage consumer, {n:,} events, {args.partitions} partitions, "
          f"{args.rounds} runs per variant (alternating)")
    print(f"{'variant':<10}{'median events/s':>17}{'vs baseline':>13}")
    for variant in VARIANTS:
        print(f"{variant:<10}{medians[variant]:>17,.0f}{medians[variant] / medians['baseline']:>12.3f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "metrics_overhead_bench.json"
    out.write_text(json.dumps({
        "benchmark": "OV1 metrics overhead", "events": n, "partitions": args.partitions, "rounds": args.rounds,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
        "python": platform.python_version(), "runs": runs, "median_events_per_second": medians,
        "ratio_metrics_to_baseline": ratio,
    }, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
