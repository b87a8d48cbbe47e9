"""W1: how long the web view takes to answer on the 100k-asset graph of the Q1 query benchmark.

Serves the database `bench/query_bench.py --reuse` keeps (assetlog_bench_query) with `assetlog serve`
(a real server process, as the read-only role) and requests, one at a time over a kept-alive
connection, from random assets:

- the asset list (first page; a page after a random key; a search; an owner filter), 50 rows each;
- an asset page (details, latest metadata, 20 history rows, the lineage picture 2 hops up and down,
  at most 150 assets, laid out by Graphviz), and the same for the biggest hub (a truncated picture),
  also its second page of downstream neighbours (goal at 10M edges: hub page p95 under 200 ms), and
  the hub's page again from a server that keeps no picture (`--pictures 0`: Graphviz at every view);
- the lineage picture alone (`/asset/graph.svg`) and the JSON of an asset and of a 10-hop lineage.

Baselines measured in the same run on the same keys:

- http floor: `/healthz`, the server's round trip doing nothing;
- queries: the `LineageStore` calls the page makes, in this process (no HTTP, no HTML, no picture);
- dot: Graphviz alone (`dot -Tsvg`) on the DOT of the same graph.

Run against the stack the environment names, after `python bench/query_bench.py --reuse`:
    eval "$(assetlog stack env)" && python bench/web_bench.py [--requests 200] [--database NAME]
(the 10M-edge graph: --database assetlog_bench_query_10m, built by query_bench.py --assets 1000000
--edges 10000000 --database assetlog_bench_query_10m).
Prints a table and writes bench/results/web_bench.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from support import kept_database_dsn

from assetlog.config import ENV_POSTGRES_DSN, ENV_POSTGRES_READONLY_DSN
from assetlog.query.render import dot
from assetlog.query.store import LineageStore
from assetlog.web.pages import HISTORY_PAGE, NEIGHBOUR_PAGE, PICTURE_DEPTH, PICTURE_LIMIT
from assetlog.web.urls import api_url, asset_url, graph_url, list_url

RESULTS = Path(__file__).resolve().parent / "results"
DRAWN = re.compile(r"(\d+) assets, (\d+) edges")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def server(dsn: str, *options: str) -> Iterator[str]:
    """`assetlog serve --port 0 [options]` as the read-only role; yields host:port."""
    # Only the read-only DSN: the writer's (the stack's own database) would be refused as another database.
    env = {**{k: v for k, v in os.environ.items() if k != ENV_POSTGRES_DSN}, ENV_POSTGRES_READONLY_DSN: dsn}
    process = subprocess.Popen([sys.executable, "-m", "assetlog", "serve", "--port", "0", "--no-auth", *options],
                               env=env,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"http://([\d.]+:\d+)/", line)
        if not found:
            raise SystemExit(f"assetlog serve did not start: {line}{process.stderr.read()}")
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


class Client:
    """One kept-alive HTTP/1.1 connection; `get` returns (milliseconds, status, body)."""

    def __init__(self, address: str) -> None:
        host, port = address.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def get(self, path: str) -> tuple[float, int, str]:
        started = time.perf_counter()
        self.conn.request("GET", path)
        answer = self.conn.getresponse()
        body = answer.read().decode("utf-8")
        return (time.perf_counter() - started) * 1000, answer.status, body


def run(client: Client, paths: list[str], drawn: bool = False) -> dict[str, Any]:
    latencies, nodes = [], []
    for path in paths:
        ms, status, body = client.get(path)
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {body[:300]}")
        latencies.append(ms)
        if drawn:
            found = DRAWN.search(body)
            nodes.append(int(found.group(1)) if found else 0)
    out: dict[str, Any] = {"requests": len(latencies), "p50_ms": percentile(latencies, 0.5),
                           "p95_ms": percentile(latencies, 0.95), "p99_ms": percentile(latencies, 0.99),
                           "max_ms": max(latencies)}
    if nodes:
        out.update(nodes_p50=percentile(nodes, 0.5), nodes_max=max(nodes))
    return out


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def baselines(dsn: str, keys: list[str]) -> dict[str, float]:
    """p50 of what an asset page costs without the web: its store calls, and Graphviz alone."""
    queries, layouts = [], []
    program = shutil.which("dot")
    with LineageStore(dsn) as store:
        for key in keys:
            graph = None

            def page_queries(key: str = key) -> None:
                nonlocal graph
                store.asset(key)
                graph = store.lineage(key, depth=PICTURE_DEPTH, limit=PICTURE_LIMIT)
                store.history(key, limit=HISTORY_PAGE)

            queries.append(timed(page_queries))
            if program and graph is not None:
                source = dot(graph).encode()
                layouts.append(timed(lambda source=source: subprocess.run(
                    [program, "-Tsvg"], input=source, capture_output=True, check=True)))
    return {"queries_p50_ms": statistics.median(queries),
            "dot_p50_ms": statistics.median(layouts) if layouts else float("nan")}


def store_page_key(dsn: str, key: str) -> str:
    """The last downstream neighbour on the first page of `key`'s asset page (where page 2 starts)."""
    with LineageStore(dsn) as store:
        return store.asset(key, neighbour_limit=NEIGHBOUR_PAGE).downstream[-1].key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind (default 200)")
    parser.add_argument("--database", default="assetlog_bench_query")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    dsn = kept_database_dsn(args.database, user="assetlog_reader")
    try:
        with psycopg.connect(dsn) as db:
            all_keys = [row[0] for row in db.execute("SELECT key FROM assets ORDER BY key")]
            hub, dependants = db.execute("SELECT upstream_key, count(*) FROM asset_edges GROUP BY 1 "
                                         "ORDER BY 2 DESC LIMIT 1").fetchone()  # type: ignore[misc]
            owners = [row[0] for row in db.execute("SELECT DISTINCT unnest(owners) FROM asset_properties")]
            edges = db.execute("SELECT count(*) FROM asset_edges").fetchone()[0]  # type: ignore[index]
    except psycopg.OperationalError as exc:
        raise SystemExit(f"cannot open {args.database} ({exc}); build it with `python bench/query_bench.py "
                         "--reuse` first") from None
    rng = random.Random(args.seed)
    n = args.requests
    keys = [rng.choice(all_keys) for _ in range(n)]
    words = [re.sub(r"\D", "", k.rsplit("/", 1)[-1])[:4] for k in rng.sample(all_keys, n)]  # e.g. "0412"
    few = max(10, n // 10)

    results: dict[str, dict[str, Any]] = {}
    with server(dsn) as address:
        client = Client(address)
        client.get("/")  # warm the pool and the templates
        results["http floor (/healthz)"] = run(client, ["/healthz"] * n)
        results["list, first page"] = run(client, [list_url()] * n)
        results["list, after a key"] = run(client, [list_url(after=k) for k in keys])
        results["list, search"] = run(client, [list_url(search=f"table_{w}") for w in words])
        results["list, owner filter"] = run(client, [list_url(owner=rng.choice(owners)) for _ in range(n)])
        results["asset page"] = run(client, [asset_url(k) for k in keys], drawn=True)
        results["asset page, hub"] = run(client, [asset_url(hub)] * max(few, 50), drawn=True)
        second = store_page_key(dsn, hub)
        results["asset page, hub, page 2"] = run(client, [asset_url(hub, downstream_after=second)] * max(few, 50),
                                                 drawn=True)
        results["picture alone (svg)"] = run(client, [graph_url(k) for k in keys])
        results["api asset"] = run(client, [api_url("asset", key=k) for k in keys])
        results["api lineage 10 hops"] = run(client, [api_url("lineage", key=k, depth=10) for k in keys])
    with server(dsn, "--pictures", "0") as address:  # every picture laid out again: a hub's first view
        client = Client(address)
        client.get("/")
        results["hub page, not kept"] = run(client, [asset_url(hub)] * max(few, 50), drawn=True)
    floors = baselines(dsn, keys[: max(50, n // 4)])
    results["asset page"]["queries_p50_ms"] = floors["queries_p50_ms"]
    results["asset page"]["dot_p50_ms"] = floors["dot_p50_ms"]

    print(f"W1 web view: {len(all_keys):,} assets, {edges:,} edges (biggest hub {dependants:,} dependants), "
          f"database {args.database}; one client, kept-alive connection; picture: {PICTURE_DEPTH} hops each "
          f"way, at most {PICTURE_LIMIT} assets")
    print(f"{'request':<26}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'drawn p50/max':>15}")
    for name, r in results.items():
        drawn = f"{r['nodes_p50']:.0f}/{r['nodes_max']}" if "nodes_p50" in r else "-"
        print(f"{name:<26}{r['requests']:>5}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{r['max_ms']:>9.1f}{drawn:>15}")
    page = results["asset page"]
    physical = floors["queries_p50_ms"] + floors["dot_p50_ms"] + results["http floor (/healthz)"]["p50_ms"]
    print(f"asset page baseline: store queries {floors['queries_p50_ms']:.1f} ms + dot alone "
          f"{floors['dot_p50_ms']:.1f} ms + http floor {results['http floor (/healthz)']['p50_ms']:.1f} ms = "
          f"{physical:.1f} ms p50; the page is {page['p50_ms'] / physical:.2f}x that")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "web_bench.json"
    out.write_text(json.dumps({
        "benchmark": "W1 web view", "assets": len(all_keys), "edges": edges, "biggest_hub": dependants,
        "picture_depth": PICTURE_DEPTH, "picture_limit": PICTURE_LIMIT, "baseline": floors,
        "page_vs_baseline": page["p50_ms"] / physical, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(), "python": platform.python_version(),
        "results": results,
    }, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
