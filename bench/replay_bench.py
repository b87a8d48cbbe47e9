"""P3: replay rate (rebuild from the topics + swap) vs the live consumers' rate, on the same events, same run.

Publishes N realistic events (the P2 projection bench's generator) to a fresh
topic prefix and database, then, each as a separate process as a user runs
it, on the same servers:

- live: `assetlog consume properties|lineage --until-caught-up`, one after the
  other (the tables a deployment has), and both at once (two processes, as
  deployed: the wall time the pair needs);
- replay: `assetlog replay properties|lineage|all` over those live tables
  (rebuild into shadow tables, deferred indexes, swap), reading the same N events;
  with `--live-beside`, both live consumers keep running during each replay (caught up, so
  polling; the swap pauses them and they carry on), as the issue's goal has it.

Reports events/s of the read phase (from the first message to the last batch
committed) and of the whole command, peak RSS of each process, and the ratio of
each replay to the live consumers doing the same work. Goal (issue 15, after issue 5's 30 s): 1M
events replayed in <= 25 s end to end, indexes included, with the live consumers running beside it.

    eval "$(assetlog stack env)" && python bench/replay_bench.py [--events 100000] [--only all] [--live-beside]
Prints a table and writes bench/results/replay_bench.json (and replay_bench-<events>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

from cpu_probe import BackendSampler
from projection_bench import generate, publish
from psycopg import conninfo
from support import child_env, empty_projection_tables, scratch

from assetlog.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def run(settings: Settings, *args: str, python: str = sys.executable) -> tuple[dict, float, float, dict[str, float | None]]:
    """Run `assetlog ARGS --json` as a child process (of `python`'s installation): (its JSON, wall seconds,
    its peak RSS in MiB, CPU seconds of the process with its worker processes and of the PostgreSQL
    backends it used)."""
    started = time.monotonic()
    params = conninfo.conninfo_to_dict(settings.postgres_dsn or "")
    application = "assetlog.consume." if args[0] == "consume" else "assetlog.replay"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            BackendSampler(settings.postgres_dsn or "", str(params.get("dbname")), application) as backends:
        child = subprocess.Popen([python, "-m", "assetlog", *args, "--json"], env=child_env(settings),
                                 stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"assetlog {' '.join(args)} failed ({child.returncode}): {err.read().strip()[-500:]}")
        report = json.loads(out.read())
    cpu = {"cpu_seconds": usage.ru_utime + usage.ru_stime,  # its reaped worker processes included
           "postgres_cpu_seconds": backends.seconds, "postgres_cpu_by_application": backends.by_application}
    return report, wall, usage.ru_maxrss / 1024, cpu


def run_pair(settings: Settings) -> float:
    """Both live consumers at once, as deployed: wall seconds until both caught up."""
    env = child_env(settings)
    started = time.monotonic()
    children = [subprocess.Popen([sys.executable, "-m", "assetlog", "consume", name, "--until-caught-up", "--json",
                                  "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in ("properties", "lineage")]
    busy = []
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"live consumer failed: {err.strip()[-500:]}")
        busy.append(json.loads(out)["busy_seconds"])
    return max(busy) if all(busy) else time.monotonic() - started


@contextmanager
def live_beside(settings: Settings) -> Iterator[None]:
    """Both live consumers running meanwhile, as deployed, stopped (SIGTERM) afterwards; each must exit
    cleanly. They are caught up, so they poll, and the swap pauses their next commit."""
    children = [subprocess.Popen([sys.executable, "-m", "assetlog", "consume", name, "--quiet"],
                                 env=child_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for name in ("properties", "lineage")]
    try:
        time.sleep(3)  # joined their groups and polling before the replay starts
        for child in children:
            if child.poll() is not None:
                raise SystemExit(f"live consumer exited before the replay: {child.stderr.read().strip()[-500:]}")
        yield
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            _, err = child.communicate(timeout=120)
            if child.returncode != 0:
                raise SystemExit(f"live consumer beside the replay failed ({child.returncode}): {err.strip()[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to publish and replay (default 100000)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--only", choices=("properties", "lineage", "all"), action="append",
                        help="replay only these (repeatable; default: properties, lineage and all)")
    parser.add_argument("--live-beside", action="store_true",
                        help="keep both live consumers running during each replay (the goal's condition)")
    args = parser.parse_args()
    replays = args.only or ["properties", "lineage", "all"]

    results: dict[str, dict] = {}
    with scratch("replay") as work:
        settings = work.event_topics(partitions=args.partitions)
        events = generate(args.events)
        started = time.monotonic()
        publish(settings, events)
        publish_s = time.monotonic() - started
        n = len(events)
        del events
        live_total = 0.0
        for name in ("properties", "lineage"):
            report, wall, rss, cpu = run(settings, "consume", name, "--until-caught-up", "--quiet")
            if report["messages"] != n:
                raise SystemExit(f"{name} consumed {report['messages']} of {n}")
            live_total += report["busy_seconds"]
            results[f"live {name}"] = {"seconds": report["busy_seconds"], "wall_seconds": wall,
                                       "events_per_second": n / report["busy_seconds"], "peak_rss_mib": rss, **cpu}
        results["live both, one after the other"] = {"seconds": live_total, "events_per_second": n / live_total}
        empty_projection_tables(settings.postgres_dsn or "")  # a second deployment's worth
        pair = run_pair(settings)
        results["live both at once (2 processes)"] = {"seconds": pair, "events_per_second": n / pair}
        for name in replays:
            with live_beside(settings) if args.live_beside else nullcontext():
                report, wall, rss, cpu = run(settings, "replay", name)
            if report["messages"] != n:
                raise SystemExit(f"replay {name} read {report['messages']} of {n}")
            read = report["phases"]["read"]
            live = results[f"live {name}"]["seconds"] if name != "all" else live_total
            results[f"replay {name}"] = {
                "seconds": read, "events_per_second": n / read, "command_seconds": report["seconds"],
                "wall_seconds": wall, "phases": report["phases"], "peak_rss_mib": rss,
                "ratio_to_live": (n / read) / (n / live), **cpu,
            }

    beside = "; live consumers running beside each replay" if args.live_beside else ""
    print(f"P3 replay: {n} events, {args.partitions} partitions per topic, published in {publish_s:.1f}s{beside}")
    print(f"{'measure':<34}{'seconds':>9}{'events/s':>11}{'vs live':>9}{'command s':>11}{'process CPU s/1M':>18}"
          f"{'PostgreSQL CPU s/1M':>21}")
    for name, row in results.items():
        ratio = f"{row['ratio_to_live']:.2f}x" if "ratio_to_live" in row else ""
        command = f"{row['command_seconds']:.1f}" if "command_seconds" in row else ""
        for side in ("cpu_seconds", "postgres_cpu_seconds"):
            if row.get(side) is not None:
                row[f"{side}_per_million"] = row[side] * 1e6 / n
        cpu_text = [f"{row[f'{side}_per_million']:,.1f}" if f"{side}_per_million" in row else "-"
                    for side in ("cpu_seconds", "postgres_cpu_seconds")]
        print(f"{name:<34}{row['seconds']:>9.1f}{row['events_per_second']:>11,.0f}{ratio:>9}{command:>11}"
              f"{cpu_text[0]:>18}{cpu_text[1]:>21}")
    for name in replays:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in results[f"replay {name}"]["phases"].items())
        print(f"  replay {name}: {phases}; peak RSS {results[f'replay {name}']['peak_rss_mib']:.0f} MiB")
    if "replay all" in results:
        per_million = 1_000_000 / results["replay all"]["events_per_second"]
        command = results["replay all"]["command_seconds"] * 1_000_000 / n
        print(f"replay all at this rate: {per_million:.0f}s per 1M events read, {command:.0f}s per 1M for the whole "
              f"command (goal <= 25s end to end)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "replay_bench.json"  # the latest run; a copy per event count keeps 100k and 1M side by side
    out.write_text(json.dumps({
        "benchmark": "P3 replay", "events": n, "partitions": args.partitions, "live_beside": args.live_beside,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "results": results,
        "goal": "1M events replayed (replay all, indexes included, live consumers beside it) in <= 25 s",
    }, indent=2))
    (RESULTS / f"replay_bench-{n}.json").write_text(out.read_text())
    print(f"written {out}")


if __name__ == "__main__":
    main()
