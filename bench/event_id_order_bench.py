"""H3: what the order of event ids costs the lineage consumer on a populated history.

Every lineage event inserts its id into three unique-id indexes: the id
registry's key, the history's key (event_id, event_time) and the
materialization index. With random (version 4) ids each insert lands on a
random leaf page; with the time-ordered (version 7) ids the producer mints,
they land at the right edge. After a checkpoint PostgreSQL logs the first
change of every page as a full page image, so the spread shows in the WAL.

On a fresh database holding `--rows` history rows (random ids, as a deployment
that predates version 7 holds), it applies batches of the P2 generator's
events through the projection's own `apply`, each batch right after a
CHECKPOINT (the worst case, which recurs every checkpoint interval), the same
events once with version 4 ids and once with ids from the producer's
`EventIdSource`, alternating (ABBA), and prints per event: wall time, the
backend's CPU (from /proc: PostgreSQL must run on this machine) and WAL bytes.

    eval "$(assetlog stack env)" && python bench/event_id_order_bench.py [--rows 3000000] [--batch 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import UTC, datetime

import psycopg
from history_ids_bench import POPULATE
from projection_bench import generate
from support import scratch

from assetlog.producer.event_builders import EventIdSource
from assetlog.projections import LineageProjection, to_event

TICK = os.sysconf("SC_CLK_TCK")


def with_ids(events: list[tuple[str, dict]], mint: object) -> list[tuple[str, dict]]:
    """The events with every id (event, materialization, runs) replaced by one from `mint`, links kept."""
    fresh: dict[str, str] = {}

    def new(old: str | None) -> str | None:
        if old is None:
            return None
        if old not in fresh:
            fresh[old] = mint()  # type: ignore[operator]
        return fresh[old]

    out = []
    for event_type, record in events:
        record = dict(record, event_id=new(record["event_id"]))
        if "materialization_event_id" in record:
            record["materialization_event_id"] = new(record["materialization_event_id"])
        run = record["run"]
        record["run"] = dict(run, task_run_id=new(run["task_run_id"]), flow_run_id=new(run["flow_run_id"]))
        out.append((event_type, record))
    return out


def backend_cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    mints = {"version 4 (random)": lambda: str(uuid.uuid4()), "version 7 (EventIdSource)": EventIdSource()}
    results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in mints}
    with scratch("event-id-order") as work:
        projection = LineageProjection()
        with psycopg.connect(work.dsn) as conn:
            projection.partitions.ensure(conn, {datetime(2025, m, 2, tzinfo=UTC) for m in range(1, 13)})
            conn.commit()
            started = time.monotonic()
            conn.execute(POPULATE, {"rows": args.rows})
            conn.execute("INSERT INTO lineage_event_ids SELECT event_id, event_time FROM lineage_history")
            conn.commit()
            print(f"{args.rows:,} history rows with random ids in {time.monotonic() - started:.0f} s", flush=True)
        with psycopg.connect(work.dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE lineage_history, lineage_event_ids")
        events = generate(args.batch * args.pairs * 2, seed=11)
        order = [label for pair in range(args.pairs) for label in (list(mints) if pair % 2 == 0 else list(mints)[::-1])]
        with psycopg.connect(work.dsn, autocommit=True) as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            for i, label in enumerate(order):
                chunk = with_ids(events[i * args.batch:(i + 1) * args.batch], mints[label])
                effects = projection.reduce([to_event(t, r) for t, r in chunk])
                conn.execute("CHECKPOINT")
                lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
                cpu, wall = backend_cpu_seconds(pid), time.monotonic()
                with conn.transaction():
                    projection.apply(conn, effects)
                wall, cpu = time.monotonic() - wall, backend_cpu_seconds(pid) - cpu
                wal = float(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)).fetchone()[0])
                results[label].append((wall, cpu, wal))
                print(f"  {label:26} wall {wall * 1e6 / args.batch:5.1f} us, backend CPU {cpu * 1e6 / args.batch:5.1f} us, "
                      f"WAL {wal / args.batch:6,.0f} B per event", flush=True)
    print(f"medians of {args.pairs} batches of {args.batch:,} events after a checkpoint, {args.rows:,} rows before:")
    medians = {label: [statistics.median(r[k] for r in rows) / args.batch for k in range(3)]
               for label, rows in results.items()}
    for label, (wall, cpu, wal) in medians.items():
        print(f"  {label:26} wall {wall * 1e6:5.1f} us, backend CPU {cpu * 1e6:5.1f} us, WAL {wal:6,.0f} B per event")
    (w4, c4, b4), (w7, c7, b7) = medians.values()
    print(f"  version 7 / version 4: wall {w7 / w4:.2f}x, CPU {c7 / c4:.2f}x, WAL {b7 / b4:.2f}x")


if __name__ == "__main__":
    main()
