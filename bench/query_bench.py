"""Q1/P4: lineage and show latency on a big, realistic graph, against physical baselines in the same run.

The graph (`graph_load.build_dag`, described there): a layered DAG of mostly
narrow fan-in with 50 Zipf hubs; default 100k assets, ~300k edges; `--assets
1000000 --edges 10000000` is the 10M-edge run. Loading (`--loader`): `copy`
(default) writes the projections' own rows in bulk, `projections` applies
every batch through `PropertiesProjection` / `LineageProjection` as the
consumers do; `tests/test_graph_load.py` proves both give the same tables.
Then VACUUM ANALYZE, as autovacuum would have done on a live database.

Measured from random assets with `LineageStore` (one connection, like the CLI):
10-hop upstream and downstream walks (limit 1000 nodes), the same as of a time
between the first and the second runs, `show` now and as of that time. In the
same run, on the same answers or roots:

- floor: fetching the answer's own rows by primary key in one query, i.e. the
  cost of returning the answer if the walk were free;
- strategies (`walk_strategies.py`), on `--naive` roots per direction: the
  shipped bounded walk, the previous walk whose hops fetched every edge, and
  the textbook recursive CTE (keys and depths only, no node limit, 5 s
  timeout), whose answer sizes also give a lower bound for a closure table;
- the biggest hub: its 10-hop downstream walk and the web page's picture walk,
  bounded vs unbounded hops.

Run against the stack the environment names:
    eval "$(assetlog stack env)" && python bench/query_bench.py [--assets 100000] [--edges N] [--reuse]
A small run: --assets 5000 --queries 100 (well under a minute). Prints a table
and writes bench/results/query_bench.json. The database (assetlog_bench_query
by default) is kept so `--reuse` skips the load next time.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from graph_load import START, build_dag, copy_load, load_through_projections
from psycopg import sql
from support import kept_database
from walk_strategies import NAIVE_CTE, one_statement_walk, unbounded_walk

from assetlog.projections.warm import warm_read_path
from assetlog.query import graph as graph_module
from assetlog.query.catalog import require_asset
from assetlog.query.graph import walk
from assetlog.query.models import Direction
from assetlog.query.store import LineageStore

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000, result


FLOOR = ("SELECT k.key, p.name, a.last_status, a.last_materialized_at FROM unnest(%s::text[]) AS k(key) "
         "LEFT JOIN assets a ON a.key = k.key LEFT JOIN asset_properties p ON p.key = k.key")


def load_baseline(checkout: Path) -> ModuleType:
    """`query/graph.py` of another checkout (e.g. main, exported with `git worktree add --detach`), as
    a module of its own: its walk, with this checkout's catalog, edge rule and models (so compare
    checkouts whose other query modules are alike)."""
    spec = importlib.util.spec_from_file_location("baseline_graph", checkout / "query" / "graph.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"no query/graph.py under {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def store_walk(store: LineageStore, module: ModuleType, key: str, direction: Direction, depth: int,
               as_of: datetime | None) -> Any:
    """What `LineageStore.lineage` does (one read-only snapshot, the root checked, the walk), with the
    walk of `module`: the shipped one or a baseline's."""
    def question(conn: psycopg.Connection) -> Any:
        require_asset(conn, key, as_of)
        return module.walk(conn, key, direction, depth, store.node_limit, as_of,
                           budget_seconds=store.statement_timeout)
    return store.read(question)


def measure(dsn: str, keys: list[str], queries: int, depth: int, limit: int, as_of: datetime,
            rng: random.Random, naive_sample: int, baseline: ModuleType | None) -> dict[str, dict]:
    """Per root, interleaved: the walk (shipped and, with a baseline, the baseline's, in alternating
    order so neither always finds the pages the other read), the floor; then all of them again at
    once ("warm": the pages the first pass read are cached), so a slow first walk that is fast when
    warm was waiting for reads, and one slow both times was waiting for a CPU."""
    results: dict[str, dict] = {}
    walks = {"shipped": graph_module} | ({"baseline": baseline} if baseline else {})
    with LineageStore(dsn, node_limit=limit) as store, psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("SET statement_timeout = '5s'")
        for key in rng.sample(keys, 20):  # warm the connection and the caches a little
            store.upstream(key, depth=depth)
        for direction in ("upstream", "downstream"):
            for label, moment in ((direction, None), (f"{direction} as-of", as_of)):
                load = os.getloadavg()[0]
                ms: dict[str, list[float]] = {f"{name} {run}": [] for name in (*walks, "floor") for run in ("", "warm")}
                nodes, cut, roots = [], [], []
                for i, key in enumerate(rng.sample(keys, queries)):
                    answers = {}
                    for run in ("", "warm"):
                        order = list(walks) if i % 2 == 0 else list(reversed(walks))
                        for name in order:
                            took, answers[name] = timed(store_walk, store, walks[name], key, direction, depth, moment)
                            ms[f"{name} {run}"].append(took)
                        answer = [n.key for n in answers["shipped"].nodes]
                        ms[f"floor {run}"].append(timed(lambda a=answer: raw.execute(FLOOR, (a,)).fetchall())[0])
                    if baseline and answers["baseline"] != answers["shipped"]:
                        raise SystemExit(f"the baseline's answer differs from the shipped walk's for {key}")
                    nodes.append(len(answers["shipped"].nodes))
                    cut.append(answers["shipped"].truncated)
                    roots.append(key)
                floors = ms["floor "]
                results[label] = {**summarize(ms["shipped "], nodes, cut, floors), "load": [load, os.getloadavg()[0]],
                                  "floor_p99_ms": percentile(floors, 0.99),
                                  "slowest": slowest(ms, roots, nodes, cut)}
                for name in ("shipped warm", *(("baseline ", "baseline warm") if baseline else ()), "floor warm"):
                    results[f"{label}: {name.strip()}"] = summarize(ms[name], nodes, cut, ms["floor warm"]
                                                                    if "warm" in name else floors)
            results.update(compare_strategies(raw, rng.sample(keys, naive_sample), direction, depth, limit))
        for label, moment in (("show", None), ("show as-of", as_of)):
            latencies = []
            for key in rng.sample(keys, queries):
                try:
                    latencies.append(timed(store.asset, key, as_of=moment)[0])
                except Exception as exc:  # an asset first seen after as_of
                    if "had not been seen yet" not in str(exc):
                        raise
            results[label] = summarize(latencies, [], [], [])
    return results


def slowest(ms: dict[str, list[float]], roots: list[str], nodes: list[int], cut: list[bool]) -> list[dict]:
    """The 1% slowest first walks (at least 3): each with its warm time and the floor's, its size."""
    first = ms["shipped "]
    picked = sorted(range(len(first)), key=lambda i: -first[i])[:max(3, len(first) // 100)]
    return [{"root": roots[i], "ms": round(first[i], 1), "warm_ms": round(ms["shipped warm"][i], 1),
             "floor_ms": round(ms["floor "][i], 1), "nodes": nodes[i], "cut": cut[i]} for i in picked]


def compare_strategies(raw: psycopg.Connection, roots: list[str], direction: Direction, depth: int,
                       limit: int) -> dict[str, dict]:
    """The same roots walked by the shipped bounded walk, the previous unbounded one, the walk in one
    statement (answers checked equal to the shipped walk's) and the naive CTE."""
    out: dict[str, dict] = {}
    walkers = [("bounded hops", walk), ("unbounded hops", unbounded_walk), ("one statement", one_statement_walk)]
    answers: dict[str, list] = {label: [] for label, _ in walkers}
    latencies: dict[str, list[float]] = {label: [] for label, _ in walkers}
    for i, key in enumerate(roots):  # per root, each first in turn: the first one reads the cold pages
        for label, walker in walkers[i % 3:] + walkers[:i % 3]:
            ms, graph = timed(walker, raw, key, direction, depth, limit, None, *((5.0,) if walker is walk else ()))
            latencies[label].append(ms)
            answers[label].append(graph)
    for label, _ in walkers:
        out[f"{direction} {label}"] = summarize(latencies[label], [len(g.nodes) for g in answers[label]],
                                                [g.truncated for g in answers[label]], [])
    if answers["one statement"] != answers["bounded hops"]:
        raise SystemExit(f"the one-statement walk's answers differ from the shipped walk's ({direction})")
    naive_ms, naive_nodes, timeouts = [], [], 0
    for key in roots:
        try:
            query = NAIVE_CTE[direction]
            ms, rows = timed(lambda q=query, k=key: raw.execute(q, {"root": k, "depth": depth}).fetchall())
            naive_ms.append(ms)
            naive_nodes.append(len(rows))  # type: ignore[arg-type]
        except psycopg.errors.QueryCanceled:
            timeouts += 1
    out[f"{direction} naive CTE"] = {**summarize(naive_ms, naive_nodes, [], []), "timeouts_5s": timeouts,
                                     "nodes_mean": statistics.fmean(naive_nodes) if naive_nodes else 0}
    return out


def measure_hub(dsn: str, hub: str, repeats: int, limit: int) -> dict[str, dict]:
    """The biggest hub: its 10-hop downstream walk and the web page's picture walk (2 hops each way,
    150 assets), bounded vs unbounded hops, on one connection."""
    out: dict[str, dict] = {}
    with psycopg.connect(dsn, autocommit=True) as raw:
        for name, direction, depth, cap in (("hub downstream 10 hops", "downstream", 10, limit),
                                            ("hub picture (2 hops, 150)", "both", 2, 150)):
            for label, walker in (("bounded", walk), ("unbounded", unbounded_walk)):
                latencies, nodes = [], []
                for _ in range(repeats):
                    ms, graph = timed(walker, raw, hub, direction, depth, cap, None,
                                      *((30.0,) if walker is walk else ()))
                    latencies.append(ms)
                    nodes.append(len(graph.nodes))
                out[f"{name}, {label}"] = summarize(latencies, nodes, [], [])
    return out


def summarize(latencies: list[float], nodes: list[int], cut: list[bool], floors: list[float]) -> dict:
    out: dict = {"queries": len(latencies), "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}
    if nodes:
        out.update(nodes_p50=percentile(nodes, 0.5), nodes_p99=percentile(nodes, 0.99), nodes_max=max(nodes))
    if nodes:
        big = [ms for ms, n in zip(latencies, nodes, strict=True) if n >= 500]
        out.update(big_answers=len(big), big_p50_ms=percentile(big, 0.5), big_p99_ms=percentile(big, 0.99))
    if cut:
        complete = [ms for ms, c in zip(latencies, cut, strict=True) if not c]
        out.update(truncated=sum(cut), complete_p50_ms=percentile(complete, 0.5),
                   complete_p99_ms=percentile(complete, 0.99), complete_max_nodes=max(
                       (n for n, c in zip(nodes, cut, strict=True) if not c), default=0))
    if floors:
        out.update(floor_p50_ms=percentile(floors, 0.5), ratio_to_floor=out["p50_ms"] / statistics.median(floors))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=100_000, help="assets in the graph (default 100000)")
    parser.add_argument("--layers", type=int, default=20, help="layers of the DAG (default 20)")
    parser.add_argument("--edges", type=int, default=None,
                        help="about this many edges in all (default: 1-5 upstreams per asset, ~3 per asset)")
    parser.add_argument("--queries", type=int, default=300, help="queries of each kind (default 300)")
    parser.add_argument("--depth", type=int, default=10, help="hops per lineage query (default 10)")
    parser.add_argument("--limit", type=int, default=1000, help="node limit per answer (default 1000)")
    parser.add_argument("--naive", type=int, default=30, help="naive CTE queries per direction (default 30)")
    parser.add_argument("--hub-repeats", type=int, default=10, help="walks from the biggest hub per row (default 10)")
    parser.add_argument("--database", default="assetlog_bench_query")
    parser.add_argument("--reuse", action="store_true", help="keep the database if it holds the same graph")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (e.g. main: git worktree add --detach DIR main) whose walk is "
                             "measured on the same roots, interleaved with this one's; answers must be equal")
    parser.add_argument("--no-migrate", action="store_true",
                        help="with --reuse: leave the kept database's schema as it is (one whose migrations "
                             "were marked by hand, or one an older checkout measures too)")
    parser.add_argument("--no-hub", action="store_true", help="skip the biggest hub's walks")
    parser.add_argument("--warm", action="store_true",
                        help="load the read path into shared buffers first, as `assetlog db warm` does")
    parser.add_argument("--loader", choices=("copy", "projections"), default="copy",
                        help="copy: the projections' rows in bulk (default); projections: batch by batch "
                             "through their apply, as the consumers do (same rows; see graph_load.py)")
    args = parser.parse_args()

    shape = {"assets": args.assets, "layers": args.layers, "seed": args.seed, "v": 3}
    signature = json.dumps({**shape, "edges": args.edges} if args.edges else shape)
    rng = random.Random(args.seed)
    keys, upstreams = build_dag(args.assets, args.layers, rng, args.edges)

    def load(dsn: str) -> dict[str, float]:
        loader = copy_load if args.loader == "copy" else load_through_projections
        print(f"loading {args.assets:,} assets with the {args.loader} loader", flush=True)
        events, seconds = loader(dsn, keys, upstreams, args.layers, rng, progress=True)
        return {"events": events, "seconds": seconds, "events_per_second": events / seconds}

    dsn, loaded = kept_database(args.database, signature, load, reuse=args.reuse, migrate_kept=not args.no_migrate)
    # The generated graph (10M edges: tens of millions of Python objects) is not needed past the load, and
    # while it lives every full collection of the cyclic GC walks all of it: 0.5-0.7 s stalls that landed
    # on random walks and made the p99 (a server process holds no such heap). Drop it; freeze the rest.
    upstreams = []
    gc.collect()
    gc.freeze()
    if args.warm:
        with psycopg.connect(dsn, autocommit=True) as db:
            warmed, buffers_mib = warm_read_path(db)
        print(f"warmed {sum(w.mib for w in warmed if w.loaded):,.0f} MiB into {buffers_mib:,.0f} MiB of shared_buffers"
              + "".join(f"; skipped {w.relation}" for w in warmed if not w.loaded), flush=True)
    with psycopg.connect(dsn) as db:
        sizes = {t: db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
                 for t in ("assets", "asset_edges", "lineage_history")}
        hub, top_hub = db.execute("SELECT upstream_key, count(*) FROM asset_edges GROUP BY upstream_key "
                                  "ORDER BY 2 DESC LIMIT 1").fetchone()  # type: ignore[misc]
    as_of = START + timedelta(hours=12)  # after the first runs, before the second ones
    baseline = load_baseline(args.baseline) if args.baseline else None
    results = measure(dsn, keys, args.queries, args.depth, args.limit, as_of, random.Random(args.seed + 1),
                      args.naive, baseline)
    if not args.no_hub:
        results.update(measure_hub(dsn, hub, args.hub_repeats, args.limit))

    load_text = (f"loaded ({args.loader}): {loaded['events']:,} events in {loaded['seconds']:.0f}s "
                 f"({loaded['events_per_second']:,.0f}/s)" if loaded else "reused")
    print(f"Q1 query: {sizes['assets']:,} assets, {sizes['asset_edges']:,} edges (biggest hub {top_hub:,} "
          f"dependants), {sizes['lineage_history']:,} history rows; {load_text}")
    print(f"{args.depth}-hop walks, limit {args.limit} nodes, as-of {as_of.isoformat()}")
    header = (f"{'query':<34}{'n':>5}{'nodes p50/p99/max':>20}{'cut':>5}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'full p50':>10}{'full p99':>10}{'>=500 p50':>10}{'floor p50':>11}{'vs floor':>9}")
    print(f"load average at the end: {os.getloadavg()}")
    print(header)
    for name, r in results.items():
        nodes = (f"{r['nodes_p50']:.0f}/{r['nodes_p99']:.0f}/{r['nodes_max']}" if "nodes_p50" in r else "-")
        cut = str(r.get("truncated", r.get("timeouts_5s", "-")))
        print(f"{name:<34}{r['queries']:>5}{nodes:>20}{cut:>5}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{r.get('complete_p50_ms', float('nan')):>10.1f}{r.get('complete_p99_ms', float('nan')):>10.1f}"
              f"{r.get('big_p50_ms', float('nan')):>10.1f}"
              f"{r.get('floor_p50_ms', float('nan')):>11.2f}{r.get('ratio_to_floor', float('nan')):>8.1f}x")
    print("cut = answers truncated at the limit (naive CTE: statement timeouts at 5 s); full = answers not cut "
          "off; >=500 = answers of 500 nodes or more (cut ones included); floor = one query fetching the "
          "answer's rows by key; warm = the same roots again right after (pages cached); baseline = the "
          "--baseline checkout's walk, interleaved")
    for name, r in results.items():
        if "load" in r:
            print(f"{name}: load average {r['load'][0]:.1f} -> {r['load'][1]:.1f}; floor p99 {r['floor_p99_ms']:.1f} ms; "
                  "slowest first walks (ms first / warm / floor, nodes, cut): " + ", ".join(
                      f"{w['ms']:.0f}/{w['warm_ms']:.0f}/{w['floor_ms']:.0f} {w['nodes']}{' cut' if w['cut'] else ''}"
                      for w in r["slowest"]))
    reach = results["downstream naive CTE"].get("nodes_mean", 0)
    closure = {"mean_10_hop_reach": reach, "rows_lower_bound": reach * sizes["assets"]}
    print(f"closure table estimate: a {args.depth}-hop downstream walk without node limit reaches {reach:,.0f} "
          f"assets on average (naive CTE sample), so a closure of {sizes['assets']:,} assets needs at least "
          f"{closure['rows_lower_bound']:,.0f} rows (its {args.depth}-hop part alone)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "query_bench.json"
    out.write_text(json.dumps({
        "benchmark": "Q1 query", "assets": sizes["assets"], "edges": sizes["asset_edges"],
        "history_rows": sizes["lineage_history"], "biggest_hub": top_hub, "depth": args.depth, "limit": args.limit,
        "as_of": as_of.isoformat(), "load": loaded, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(), "python": platform.python_version(), "results": results,
        "closure_estimate": closure, "loader": args.loader, "biggest_hub_key": hub,
        "goal": "10-hop p50 <= 20 ms, p99 <= 100 ms, limit 1000 nodes",
    }, indent=2, default=str))
    print(f"written {out}")


if __name__ == "__main__":
    main()
