"""H1: what each index of `lineage_history` costs per stored row, and which queries it serves.

Every event the lineage consumer stores is one row COPYed into `lineage_history`
plus one entry in each of its indexes (two are partial: only rows that match
their predicate get an entry, but every row pays for evaluating it). In one
run, on a scratch database:

- COPY cost: the P2 bench's events as history rows, COPYed in batches of 5,000
  (as the consumer writes them: binary, one transaction per batch) into a
  fresh table defined like `lineage_history` with only its primary key, with
  the key plus one other index, and with all of them; per row: wall µs and
  CPU µs of the PostgreSQL backend, and each index's part (its figure less the
  key's alone);
- query cost: the same events projected into the real tables; then the read
  side's functions that touch the history (`show` now and as of a time, the
  history page, a lineage walk as of a time; `query/`) on sampled keys, p50 with
  every index, and again with each index dropped in a transaction that is
  rolled back (so nothing is changed).

    eval "$(assetlog stack env)" && python bench/history_index_bench.py [--events 100000] [--queries 30]
Prints two tables and writes bench/results/history_index_bench.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from cpu_probe import backend_pid, pid_cpu_seconds
from projection_bench import generate
from psycopg import sql
from support import scratch

from assetlog.projections import to_event
from assetlog.projections.base import copy_rows
from assetlog.projections.lineage import HISTORY_COLUMNS, LineageProjection, history_row
from assetlog.projections.properties import PropertiesProjection
from assetlog.query import catalog, graph

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 5000


def history_indexes(conn: psycopg.Connection) -> dict[str, str]:
    """name -> CREATE INDEX statement of every index on lineage_history (primary key included)."""
    return dict(conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'lineage_history' ORDER BY indexname").fetchall())


def copy_cost(conn: psycopg.Connection, rows: list[tuple], definitions: list[str]) -> tuple[float, float | None]:
    """(wall µs, backend CPU µs) per row to COPY `rows` into a fresh table with these indexes."""
    conn.execute("DROP TABLE IF EXISTS index_cost")
    conn.execute("CREATE TABLE index_cost (LIKE lineage_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    for definition in definitions:
        conn.execute(definition.replace(" lineage_history_", " index_cost_", 1)
                     .replace(" lineage_history ", " index_cost ").replace(".lineage_history ", ".index_cost "))
    conn.commit()
    backend = backend_pid(conn)
    cpu_before, started = pid_cpu_seconds(backend), time.monotonic()
    for lo in range(0, len(rows), BATCH):
        with conn.cursor() as cur:
            copy_rows(cur, sql.Identifier("index_cost"), HISTORY_COLUMNS, rows[lo:lo + BATCH])
        conn.commit()
    wall, cpu_after = time.monotonic() - started, pid_cpu_seconds(backend)
    cpu = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None
    return wall / len(rows) * 1e6, (cpu / len(rows) * 1e6 if cpu is not None else None)


def load(conn: psycopg.Connection, events: list[tuple[str, dict]]) -> None:
    for projection in (PropertiesProjection(), LineageProjection()):
        for lo in range(0, len(events), BATCH):
            chunk = [to_event(t, r) for t, r in events[lo:lo + BATCH]]
            with conn.transaction():
                projection.apply(conn, projection.reduce(chunk))
    conn.commit()


def query_set(keys: list[str], as_of: datetime) -> dict[str, Callable[[psycopg.Connection, str], Any]]:
    return {
        "show": lambda conn, key: catalog.asset_details(conn, key, None, 20),
        "show as-of": lambda conn, key: catalog.asset_details(conn, key, as_of, 20),
        "history page": lambda conn, key: catalog.history_page(conn, key, 20, None, 0),
        "lineage as-of (2 hops, 100 nodes)": lambda conn, key: graph.walk(conn, key, "both", 2, 100, as_of, 30.0),
    }


def time_queries(conn: psycopg.Connection, queries: dict[str, Callable], keys: list[str]) -> dict[str, float]:
    """p50 ms of each query over `keys` (after one warm-up pass)."""
    found = {}
    for name, query in queries.items():
        for key in keys[:3]:
            query(conn, key)
        times = []
        for key in keys:
            started = time.perf_counter()
            query(conn, key)
            times.append((time.perf_counter() - started) * 1000)
        found[name] = statistics.median(times)
    return found


def print_copy(copy: dict[str, tuple[float, float | None]], rows: int, rounds: int) -> None:
    base_wall, base_cpu = copy["primary key only"]
    print(f"H1 lineage_history indexes: {rows:,} rows COPYed in batches of {BATCH} (binary), best of {rounds}")
    print(f"{'configuration':<45}{'wall us/row':>12}{'PG CPU us/row':>15}{'index part (wall/CPU)':>24}")
    for label, (wall, cpu) in copy.items():
        cpu_value = cpu if cpu is not None else float("nan")
        part = "" if label == "primary key only" else f"{wall - base_wall:+.1f} / {cpu_value - (base_cpu or 0):+.1f}"
        print(f"{label:<45}{wall:>12.1f}{cpu_value:>15.1f}{part:>24}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=30, help="keys sampled per query (default 30)")
    parser.add_argument("--rounds", type=int, default=2, help="COPY measurements per configuration (best kept)")
    args = parser.parse_args()

    with scratch("history-index") as work:
        dsn = work.dsn
        events = generate(args.events)
        rows = [history_row(to_event(t, r)) for t, r in events]
        with psycopg.connect(dsn) as conn:
            indexes = history_indexes(conn)
            key_name = next(name for name in indexes if name.endswith("_pkey"))
            configurations = {"primary key only": [indexes[key_name]]}
            for name, definition in indexes.items():
                if name != key_name:
                    configurations[f"+ {name}"] = [indexes[key_name], definition]
            configurations["all"] = list(indexes.values())
            copy: dict[str, tuple[float, float | None]] = {}
            for _ in range(args.rounds):  # alternate, keep each configuration's best
                for label, definitions in configurations.items():
                    measured = copy_cost(conn, rows, definitions)
                    if label not in copy or measured[0] < copy[label][0]:
                        copy[label] = measured
            conn.execute("DROP TABLE index_cost")
            conn.commit()
            print_copy(copy, len(rows), args.rounds)
            load(conn, events)
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")  # as autovacuum would have, on a live database
            conn.autocommit = False
            times = [r["event_time"] for _t, r in events]
            as_of = min(times) + (max(times) - min(times)) / 2
            # keys materialized before as_of, so that every query has an answer then and now
            keys = sorted({r["asset_key"] for t, r in events if t == "materialization" and r["event_time"] <= as_of})
            sample = random.Random(3).sample(keys, min(args.queries, len(keys)))
            queries = query_set(sample, as_of)
            time_queries(conn, queries, sample)  # a first pass warms the caches for every configuration
            with_all = time_queries(conn, queries, sample)
            print(f"\nquery p50 ms over {len(sample)} keys, with every index and with one dropped (as of "
                  f"{as_of:%Y-%m-%d %H:%M})")
            print(f"{'':<40}" + "".join(f"{name:>36}" for name in queries))
            print(f"{'all indexes':<40}" + "".join(f"{with_all[name]:>36.2f}" for name in queries), flush=True)
            without: dict[str, dict[str, float]] = {}
            for name in indexes:
                if name == key_name:
                    continue  # the key is the idempotence rule itself, not a choice
                with conn.transaction(force_rollback=True):
                    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
                    found = without[name] = time_queries(conn, queries, sample)
                print(f"{'without ' + name:<40}" + "".join(
                    f"{found[q]:>27.2f} ({found[q] / with_all[q]:>5.1f}x)" for q in queries), flush=True)

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "history_index_bench.json"
    out.write_text(json.dumps({
        "benchmark": "H1 lineage_history indexes", "rows": len(rows), "batch": BATCH,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "copy_us_per_row": {label: {"wall": wall, "postgres_cpu": cpu} for label, (wall, cpu) in copy.items()},
        "query_p50_ms": {"all": with_all, **{f"without {name}": found for name, found in without.items()}},
    }, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
