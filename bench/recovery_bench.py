"""Crash recovery: a lineage consumer SIGKILLed and restarted at once, until its first new row is projected.

For each membership variant, one `assetlog consume lineage` process runs with
that variant's settings; the loop kills it with SIGKILL (no warning, no
LeaveGroup), starts it again at once with the same settings, publishes a few
new materializations, and polls PostgreSQL for their `lineage_history` rows.
Recovery = first new row visible minus the moment of the kill; it includes
the interpreter's start-up, joining the group and the first batch. The
consumer's log says when the group assigned it partitions, which splits the
figure into kill -> assigned (start-up and joining) and the rest. Variants:

- `dynamic`: `ASSETLOG_CONSUMER_SLOT=none`, the old default: the restarted
  process waits for the killed member's session to expire (`session.timeout.ms`
  10 s) before the group gives it any partition: the baseline.
- `static`: the default since issue 11: a slot per process (`group.instance.id`
  `lineage.<host>.<slot>`, slot claimed with a lock file), so the restarted
  process is recognised as the same member and gets its partitions at once.
- `kip848`, `kip848-static` (opt-in with `--variants`): the new consumer group
  protocol (`group.protocol=consumer`, KIP-848), without and with a slot.

    eval "$(assetlog stack env)" && python bench/recovery_bench.py [--kills 10] [--variants dynamic,static]
Prints a table and writes bench/results/recovery_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from confluent_kafka import Producer
from freshness_bench import percentile
from support import Scratch, child_env, scratch

from assetlog.config import Settings
from assetlog.schemas import MATERIALIZATION, encode

RESULTS = Path(__file__).resolve().parent / "results"
PRODUCER = {"host": "bench", "pid": 1, "version": "0.1.0"}
VARIANTS: dict[str, dict[str, str]] = {
    "dynamic": {"ASSETLOG_CONSUMER_SLOT": "none"},
    "static": {},
    "kip848": {"ASSETLOG_CONSUMER_SLOT": "none", "ASSETLOG_KAFKA_GROUP_PROTOCOL": "consumer"},
    "kip848-static": {"ASSETLOG_KAFKA_GROUP_PROTOCOL": "consumer"},
}
POLL_SECONDS = 0.01
KEYS_PER_ROUND = 3


def materialization(key: str) -> dict:
    run = {"flow_run_id": str(uuid.uuid4()), "flow_name": "recovery", "task_run_id": str(uuid.uuid4()),
           "task_name": "build"}
    return {"event_id": str(uuid.uuid4()), "event_time": datetime.now(UTC), "asset_key": key,
            "status": "SUCCEEDED", "properties": None, "by": None, "upstream_keys": [], "error": None,
            "run": run, "producer": PRODUCER}


def publish(producer: Producer, settings: Settings, keys: list[str]) -> None:
    for key in keys:
        producer.produce(settings.topics.materializations, key=key.encode(),
                         value=encode(MATERIALIZATION, materialization(key)))
    if producer.flush(30):
        raise SystemExit("recovery_bench: the broker did not acknowledge the events")


def wait_visible(dsn: str, keys: list[str], timeout: float) -> tuple[float, float]:
    """(monotonic time the first row of `keys` was visible, time all were)."""
    first = None
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            seen = conn.execute("SELECT count(DISTINCT asset_key) FROM lineage_history WHERE asset_key = ANY(%s)",
                                (keys,)).fetchone()[0]
            now = time.monotonic()
            if seen and first is None:
                first = now
            if seen == len(keys):
                return first or now, now
            time.sleep(POLL_SECONDS)
    raise SystemExit(f"recovery_bench: rows of {keys} not visible after {timeout:.0f}s")


def start_consumer(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "w", encoding="utf-8") as log:  # one log per process: its own "assigned" line
        return subprocess.Popen([sys.executable, "-m", "assetlog", "consume", "lineage"], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


def assigned_at(log_path: Path) -> float | None:
    """Wall-clock time of the consumer's first "assigned" log line (logging's asctime, local time)."""
    for line in log_path.read_text(errors="replace").splitlines():
        if ": assigned " in line and not line.endswith(": assigned nothing"):
            stamp = " ".join(line.split(" ", 2)[:2])
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def run_variant(work: Scratch, name: str, kills: int, timeout: float) -> tuple[list[float], list[float]]:
    """Recovery times and kill -> assigned times (ms) over `kills` SIGKILL + immediate restarts."""
    settings = work.event_topics(name)
    dsn, workdir = work.dsn, work.workdir
    env = child_env(settings)
    env.update(VARIANTS[name])
    env["XDG_STATE_HOME"] = str(workdir / name)  # this variant's own slot locks
    log_path = workdir / f"{name}.log"
    producer = Producer(settings.kafka_client_config(required={"acks": "all"}))
    times: list[float] = []
    joins: list[float] = []
    process = start_consumer(env, log_path)
    try:
        warm = [f"s3://recovery/{name}/warm/{i}" for i in range(KEYS_PER_ROUND)]
        publish(producer, settings, warm)
        wait_visible(dsn, warm, timeout)
        for kill in range(kills):
            time.sleep(1.0)  # a steady member, heartbeating, before the crash
            killed_at, killed_wall = time.monotonic(), time.time()
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process = start_consumer(env, log_path)
            keys = [f"s3://recovery/{name}/{kill}/{i}" for i in range(KEYS_PER_ROUND)]
            publish(producer, settings, keys)
            first, _ = wait_visible(dsn, keys, timeout)
            times.append((first - killed_at) * 1000)
            joined = assigned_at(log_path)
            joins.append((joined - killed_wall) * 1000 if joined else float("nan"))
            print(f"  {name} kill {kill + 1}: first new row after {times[-1]:.0f} ms "
                  f"(assigned partitions after {joins[-1]:.0f} ms)", flush=True)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    if process.returncode not in (0, -signal.SIGTERM):
        print(f"  {name}: the last consumer exited {process.returncode}; log:\n"
              f"{log_path.read_text(errors='replace')[-2000:]}")
    return times, joins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, choices=range(1, 1001), metavar="1..1000", default=10,
                        help="SIGKILLs per variant (default 10)")
    parser.add_argument("--variants", default="dynamic,static",
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default dynamic,static)")
    parser.add_argument("--timeout", type=float, default=120.0, help="longest wait for a row, seconds")
    args = parser.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(unknown)}")

    results = {}
    with scratch("recovery") as work:
        for name in names:
            times, joins = run_variant(work, name, args.kills, args.timeout)
            results[name] = {"kills": len(times), "p50_ms": percentile(times, 0.5), "max_ms": max(times),
                             "min_ms": min(times), "all_ms": [round(t) for t in times],
                             "assigned_p50_ms": percentile(joins, 0.5), "assigned_all_ms": [round(t) for t in joins]}

    print(f"Crash recovery: lineage consumer SIGKILLed and restarted at once, {args.kills} times per variant; "
          "kill -> first new row in lineage_history")
    print(f"{'variant':<15}{'kills':>6}{'p50 ms':>9}{'max ms':>9}{'min ms':>9}{'assigned p50':>14}")
    for name, r in results.items():
        print(f"{name:<15}{r['kills']:>6}{r['p50_ms']:>9.0f}{r['max_ms']:>9.0f}{r['min_ms']:>9.0f}"
              f"{r['assigned_p50_ms']:>14.0f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "recovery_bench.json"
    out.write_text(json.dumps({
        "benchmark": "crash recovery", "kills_per_variant": args.kills, "variants": {n: VARIANTS[n] for n in names},
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "results": results,
        "goal": "a restarted consumer projects again within about 2 s of the kill, default settings",
    }, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
