"""S1: throughput with 1, 2 and 4 consumer processes per projection group, on topics of 12 partitions.

Publishes N realistic events once (the same generator as P2) to a fresh topic
prefix whose topics have 12 partitions, then, for each process count and each
projection, projects them into a fresh database with that many
`assetlog consume PROJECTION` processes in one group, and measures the time
from their start until the offsets stored in PostgreSQL reach the end of every
partition (group joins included, as an operator would see it). Beside each
figure: the CPU seconds the consumer processes and the PostgreSQL server spent
(from /proc), the consumers' own backends apart, so it shows where the box
saturates. The same run's single process is the baseline of each ratio.

    eval "$(assetlog stack env)" && python bench/scaling_bench.py [--events 200000] [--processes 1,2,4]
Prints a table and writes bench/results/scaling_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from projection_bench import generate, publish
from support import scratch

from assetlog.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (and their reaped children), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def backend_pids(dsn: str) -> list[int]:
    """The server processes serving the bench database's other sessions (the consumers' backends)."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]


def stored_total(dsn: str, projection: str) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return conn.execute("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE projection = %s",
                            (projection,)).fetchone()[0]


def run_group(settings: Settings, dsn: str, projection: str, processes: int, total: int) -> dict:
    env = {**os.environ, "ASSETLOG_POSTGRES_DSN": dsn, "ASSETLOG_TOPIC_PREFIX": settings.topic_prefix}
    postgres_before = cpu_seconds(postgres_pids())
    started = time.monotonic()
    group = [subprocess.Popen([sys.executable, "-m", "assetlog", "consume", projection, "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(processes)]
    try:
        while stored_total(dsn, projection) < total:
            if any(p.poll() is not None for p in group):
                raise SystemExit(f"a {projection} consumer exited early")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        consumer_cpu = cpu_seconds([p.pid for p in group])
        backends_cpu = cpu_seconds(backend_pids(dsn))
    finally:
        for process in group:
            process.terminate()
        for process in group:
            process.wait(30)
    return {"processes": processes, "seconds": seconds, "events_per_second": total / seconds,
            "consumer_cpu_seconds": consumer_cpu, "backends_cpu_seconds": backends_cpu,
            "consumer_cores": consumer_cpu / seconds, "backends_cores": backends_cpu / seconds,
            "postgres_cpu_seconds": cpu_seconds(postgres_pids()) - postgres_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--processes", default="1,2,4", help="process counts, comma separated")
    args = parser.parse_args()
    counts = [int(part) for part in args.processes.split(",")]
    results: list[dict] = []
    with scratch("scaling") as work:  # its migrated, empty database is the template of each group's own
        settings = work.event_topics(partitions=args.partitions)
        events = generate(args.events)
        publish(settings, events)
        total = len(events)
        for count in counts:
            for projection in ("properties", "lineage"):
                with work.database_copy(f"{projection}_{count}") as dsn:
                    results.append({"projection": projection, **run_group(settings, dsn, projection, count, total)})
    print(f"S1 scaling: {total} events, {args.partitions} partitions per topic, {os.cpu_count()} cores")
    print(f"{'projection':<12}{'processes':>10}{'events/s':>11}{'vs 1':>7}{'consumer CPU s':>16}"
          f"{'cores':>7}{'backends CPU s':>16}{'cores':>7}{'all PostgreSQL CPU s':>22}")
    for row in results:
        single = next(r for r in results if r["projection"] == row["projection"] and r["processes"] == counts[0])
        row["ratio_to_first"] = row["events_per_second"] / single["events_per_second"]
        print(f"{row['projection']:<12}{row['processes']:>10}{row['events_per_second']:>11,.0f}"
              f"{row['ratio_to_first']:>6.2f}x{row['consumer_cpu_seconds']:>16.1f}{row['consumer_cores']:>7.2f}"
              f"{row['backends_cpu_seconds']:>16.1f}{row['backends_cores']:>7.2f}{row['postgres_cpu_seconds']:>22.1f}")
    print("cores = CPU seconds per wall-clock second; backends = the server processes of the consumers' sessions; "
          "all PostgreSQL = every server process on the machine (shared with other work)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "scaling_bench.json"
    out.write_text(json.dumps({"benchmark": "S1 scaling", "events": total, "partitions": args.partitions,
                               "cores": os.cpu_count(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": platform.machine(), "results": results}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
