"""The first lineage walks after a replay's swap, with the replay's warm (the default) and without
(`--no-warm`), alternated in one run.

Publishes the task runs of the query benchmarks' layered DAG (`graph_load`) to
a scratch topic prefix and database, projects them once (`replay all`), then
per round runs `assetlog replay lineage` (it rebuilds `asset_edges` and its
two covering indexes) once with and once without `--no-warm`, alternating
which goes first, and right after each swap times the first 10-hop upstream
and downstream walks (`LineageStore`, limit 1000 nodes, a new connection)
from the round's random roots, the same roots for both. Beside the times: the
blocks those walks had to read from outside shared buffers (PostgreSQL's
`pg_statio` counters for `asset_edges`, its indexes, `assets` and
`asset_properties`), which is what a warm saves; on a box whose page cache
holds the files, such a read is a copy from the OS, not a device read, so the
time saved is smaller than after a restart.

    eval "$(assetlog stack env)" && python bench/replay_warm_bench.py [--assets 20000] [--rounds 3]
Prints a table and writes bench/results/replay_warm_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from graph_load import build_dag, raw_event_batches
from projection_bench import publish
from query_bench import percentile
from replay_bench import run
from support import scratch

from assetlog.config import Settings
from assetlog.query.store import LineageStore

RESULTS = Path(__file__).resolve().parent / "results"
WATCHED = ("asset_edges", "assets", "asset_properties")


def blocks_read(dsn: str) -> int:
    """Blocks PostgreSQL read from outside shared buffers so far, for the walks' tables and indexes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT sum(coalesce(heap_blks_read, 0) + coalesce(idx_blks_read, 0)) FROM pg_statio_user_tables "
            "WHERE relname = ANY(%s)", (list(WATCHED),)).fetchone()
    return int(row[0] or 0) if row else 0


def first_walks(dsn: str, roots: list[str], depth: int, limit: int) -> dict[str, object]:
    """Time upstream and downstream walks from every root on a fresh connection; and the blocks they read
    from outside shared buffers (counted once the connection has ended, when its backend reports them)."""
    time.sleep(0.5)  # the replay's own sessions' counters arrive as they exit
    before = blocks_read(dsn)
    ms: list[float] = []
    nodes = 0
    with LineageStore(dsn, node_limit=limit) as store:
        for key in roots:
            for direction in ("upstream", "downstream"):
                started = time.perf_counter()
                graph = store.lineage(key, direction=direction, depth=depth)  # type: ignore[arg-type]
                ms.append((time.perf_counter() - started) * 1000)
                nodes += len(graph.nodes)
    time.sleep(0.5)  # the backend's statistics reach the shared counters as it exits
    return {"first_ms": ms[0], "mean_ms": statistics.fmean(ms), "p50_ms": percentile(ms, 0.5),
            "p95_ms": percentile(ms, 0.95), "total_ms": sum(ms), "nodes": nodes, "walks": len(ms),
            "blocks_read": blocks_read(dsn) - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=20_000, help="assets in the graph (default 20000)")
    parser.add_argument("--layers", type=int, default=20, help="layers of the DAG (default 20)")
    parser.add_argument("--edges", type=int, default=None, help="about this many edges (default: 1-5 per asset)")
    parser.add_argument("--roots", type=int, default=25, help="roots per round, each walked both ways (default 25)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one replay each way (default 3)")
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    keys, upstreams = build_dag(args.assets, args.layers, rng, args.edges)
    runs: dict[str, list[dict]] = {"warm": [], "no-warm": []}
    with scratch("replay-warm") as work:
        settings: Settings = work.event_topics()
        events = 0
        for batch in raw_event_batches(keys, upstreams, args.layers, rng, 5000):
            publish(settings, batch)
            events += len(batch)
        run(settings, "replay", "all", "--no-warm")
        for round_ in range(args.rounds):
            roots = rng.sample(keys, args.roots)
            order = ["warm", "no-warm"] if round_ % 2 == 0 else ["no-warm", "warm"]
            for mode in order:
                report, wall, _, _ = run(settings, "replay", "lineage", *(["--no-warm"] if mode == "no-warm" else []))
                walks = first_walks(work.dsn, roots, args.depth, args.limit)
                warm = report["warm"]
                runs[mode].append({**walks, "replay_seconds": report["seconds"], "replay_wall_seconds": wall,
                                   "warm_seconds": warm.get("seconds"), "warmed_mib": warm.get("loaded_mib"),
                                   "load": os.getloadavg()[0]})
                print(f"round {round_ + 1} {mode:<8} first walk {walks['first_ms']:7.1f} ms, mean "
                      f"{walks['mean_ms']:6.1f} ms, p95 {walks['p95_ms']:6.1f} ms, blocks read "
                      f"{walks['blocks_read']:>6,}; replay {report['seconds']:.1f}s"
                      + (f" + warm {warm['seconds']:.2f}s ({warm['loaded_mib']} MiB)" if warm["warmed"] else ""),
                      flush=True)

    def median(mode: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[mode])

    summary = {field: {"warm": median("warm", field), "no-warm": median("no-warm", field)}
               for field in ("first_ms", "mean_ms", "p95_ms", "total_ms", "blocks_read")}
    for row in summary.values():
        row["no-warm / warm"] = row["no-warm"] / row["warm"] if row["warm"] else None
    print(f"replay lineage of {events:,} events ({args.assets:,} assets), then {2 * args.roots} {args.depth}-hop walks "
          f"(limit {args.limit}); medians of {args.rounds} rounds; shared machine, load {os.getloadavg()[0]:.1f}")
    for field, row in summary.items():
        ratio = f"{row['no-warm / warm']:.2f}x" if row["no-warm / warm"] is not None else "-"
        print(f"  {field:<12} warm {row['warm']:>10,.1f}   no-warm {row['no-warm']:>10,.1f}   no-warm/warm {ratio}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay_warm_bench.json").write_text(json.dumps({
        "benchmark": "replay warm", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "events": events,
        "args": vars(args), "summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
