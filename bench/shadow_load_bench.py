"""P3 load strategies: PostgreSQL's CPU per history row for ways a replay could load its shadow tables.

A replay's PostgreSQL work is mostly the lineage writers' (the history COPY,
the event-id registry, the edge upserts) and the deferred index builds. This
measures, on a scratch database, with the P2 events as history rows and the
backend's CPU from `/proc` (`cpu_probe.py`):

- `split`: one lineage shadow writer's statements, batch by batch, as
  `LineageProjection.apply` runs them (partitions, registry COPY, history COPY,
  edges staged + upserted), for two fold sizes;
- `modes`: the history rows COPYed (binary, batches of 10,000,
  synchronous_commit off, like a replay) into a table like `lineage_history`
  then given its primary key and other indexes, four ways: key during the
  load; key after it; UNLOGGED during the load then SET LOGGED before the
  indexes; UNLOGGED until after the indexes. Also the WAL written per row.

    eval "$(assetlog stack env)" && python bench/shadow_load_bench.py [--events 200000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import psycopg
from cpu_probe import backend_pid, pid_cpu_seconds
from projection_bench import generate
from psycopg import sql
from support import scratch

from assetlog.projections import to_event
from assetlog.projections.base import copy_rows, table, unnest_rows
from assetlog.projections.edge_merge import upsert_edges
from assetlog.projections.events import Position
from assetlog.projections.lineage import _REGISTRY_COLUMNS, EDGES_COLUMNS, HISTORY_COLUMNS, LineageProjection
from assetlog.projections.shadow import ShadowTables

MODES = ("key during load", "key after load", "unlogged, SET LOGGED before indexes", "unlogged until after indexes")


def split(dsn: str, events: list, fold: int) -> dict[str, float]:
    """CPU s per 1M events of each statement of a lineage shadow writer, folding `fold` events a batch."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ShadowTables("public", ["lineage_history", "asset_edges", "lineage_event_ids"]).create(conn)
    spent = dict.fromkeys(("partitions + commit", "registry COPY", "history COPY", "edges upsert"), 0.0)
    projection = LineageProjection("assetlog_shadow")
    with psycopg.connect(dsn) as conn:
        conn.execute("SET synchronous_commit = off")
        pid = backend_pid(conn)
        for start in range(0, len(events), fold):
            effects = projection.reduce(events[start:start + fold])
            rows = [row for _position, row in effects.history.values()]
            marks = [pid_cpu_seconds(pid) or 0.0]
            projection.partitions.ensure(conn, (row[2] for row in rows))
            marks.append(pid_cpu_seconds(pid) or 0.0)
            with conn.cursor() as cur:
                copy_rows(cur, table("assetlog_shadow", "lineage_event_ids"), _REGISTRY_COLUMNS,
                          [(row[0], row[2]) for row in rows])
            marks.append(pid_cpu_seconds(pid) or 0.0)
            with conn.cursor() as cur:
                copy_rows(cur, table("assetlog_shadow", "lineage_history"), HISTORY_COLUMNS, rows)
            marks.append(pid_cpu_seconds(pid) or 0.0)
            batch, arrays = unnest_rows(EDGES_COLUMNS, (e.as_tuple() for e in effects.edges.values()))
            conn.execute(upsert_edges(table("assetlog_shadow", "asset_edges"), batch), arrays)
            marks.append(pid_cpu_seconds(pid) or 0.0)
            conn.commit()
            marks.append(pid_cpu_seconds(pid) or 0.0)
            spent["partitions + commit"] += marks[1] - marks[0] + marks[5] - marks[4]
            spent["registry COPY"] += marks[2] - marks[1]
            spent["history COPY"] += marks[3] - marks[2]
            spent["edges upsert"] += marks[4] - marks[3]
    return {name: seconds * 1e6 / len(events) for name, seconds in spent.items()}


def load(dsn: str, rows: list[tuple], mode: str, batch: int = 10_000) -> dict[str, float]:
    """CPU and wall s per 1M rows of loading `rows` and building the indexes, one way."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        indexes = dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                                    "AND tablename = 'lineage_history'").fetchall())
        del indexes["lineage_history_pkey"]
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '128MB'")
        conn.execute("DROP TABLE IF EXISTS load_target")
        unlogged = mode.startswith("unlogged")
        conn.execute(sql.SQL("CREATE {} TABLE load_target (LIKE lineage_history INCLUDING DEFAULTS "
                             "INCLUDING CONSTRAINTS)").format(sql.SQL("UNLOGGED" if unlogged else "")))
        key = "ALTER TABLE load_target ADD PRIMARY KEY (event_id, event_time)"
        if mode == MODES[0]:
            conn.execute(key)
        pid = backend_pid(conn)
        cpu, wall = pid_cpu_seconds(pid) or 0.0, time.monotonic()
        wal = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
        for start in range(0, len(rows), batch):
            with conn.transaction(), conn.cursor() as cur:
                copy_rows(cur, sql.Identifier("load_target"), HISTORY_COLUMNS, rows[start:start + batch])
        load_cpu = (pid_cpu_seconds(pid) or 0.0) - cpu
        if mode == MODES[2]:
            conn.execute("ALTER TABLE load_target SET LOGGED")
        if mode != MODES[0]:
            conn.execute(key)
        for name, definition in indexes.items():
            conn.execute(definition.replace(" ON ONLY public.lineage_history ", " ON load_target ")
                         .replace(f"INDEX {name} ", f"INDEX {name}_load "))
        if mode == MODES[3]:
            conn.execute("ALTER TABLE load_target SET LOGGED")
        per = 1e6 / len(rows)
        written = conn.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", (wal,)).fetchone()[0]  # type: ignore[index]
        return {"load_cpu": load_cpu * per, "total_cpu": ((pid_cpu_seconds(pid) or 0.0) - cpu) * per,
                "total_wall": (time.monotonic() - wall) * per, "wal_bytes_per_row": float(written) / len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    events = [to_event(t, r, Position("t", 0, i)) for i, (t, r) in enumerate(generate(args.events))]
    rows = [row for _position, row in LineageProjection().reduce(events).history.values()]
    for _round in range(args.rounds):
        for fold in (10_000, 50_000):
            with scratch("shadow-split") as work:
                figures = split(work.dsn, events, fold)
            print(f"lineage shadow writer, folds of {fold:,} events, PostgreSQL CPU s per 1M events: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()) + f"; total {sum(figures.values()):.1f}",
                  flush=True)
        with scratch("shadow-modes") as work:
            for mode in MODES:
                r = load(work.dsn, rows, mode)
                print(f"{mode:<38} load {r['load_cpu']:5.1f}, with indexes {r['total_cpu']:5.1f} CPU s per 1M rows "
                      f"({r['total_wall']:.1f} s wall); WAL {r['wal_bytes_per_row']:.0f} B per row", flush=True)


if __name__ == "__main__":
    main()
