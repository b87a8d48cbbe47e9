"""Issue 15, fourth pass: where PostgreSQL's CPU goes, statement by statement, in a live consumer's batches.

Runs a live consumer's write path (`TrackedWriter.write` with the generation
fence check, one transaction per batch, as `runner.py` commits) over the P2
events without Kafka, and reads the PostgreSQL backend's CPU time around every
statement (`/proc/<pid>/schedstat`, nanoseconds); what is left of a batch's CPU (BEGIN, savepoints, COMMIT)
is reported as "transaction control". Two workloads per projection, one after
the other on the same tables:

- `first sight`: the P2 events into empty tables (inserts at first, updates
  more and more as keys repeat: about 10 events per key);
- `again`: the same task runs once more, after the last of them (new event
  ids, later times): every `assets` / `asset_properties` / `asset_edges` row an
  update, as on a platform that re-materializes the same assets every cycle.

After each workload it prints the tables' inserted / updated / HOT-updated /
dead tuples (`pg_stat_user_tables`), and, when the server loads
pg_stat_statements (a private instance started with
`shared_preload_libraries=pg_stat_statements`; the shared stack is not
reconfigured for this), each statement's calls, rows, execution time and WAL
bytes.

Caveat: in its runs the dead row versions were never pruned between batches, as they are under the
live consumer (why was not found: bench/README.md, issue 15, "Fourth pass"), so its HOT shares and
its `assets` upsert costs are those of a table without pruning, not the live consumer's.

    eval "$(assetlog stack env)" && python bench/pg_share_bench.py [--events 200000] [--batch 5000] \\
        [--only properties|lineage]
"""

from __future__ import annotations

import argparse
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from cpu_probe import backend_pid
from cpu_probe import pid_oncpu_seconds as pid_cpu_seconds
from projection_bench import generate
from support import scratch

from assetlog.consumers.batch import Batch
from assetlog.consumers.fencing import GenerationFence
from assetlog.consumers.offsets import OffsetStore
from assetlog.consumers.tracked_writer import TrackedWriter
from assetlog.projections import LineageProjection, PropertiesProjection, to_event
from assetlog.projections.events import Event, Position
from assetlog.schemas import DEPENDENCY

TOPICS = {"materialization": "bench.materializations", "dependency": "bench.dependencies",
          "metadata": "bench.metadata"}
PREPARE: int | None = 5
TABLES = ("assets", "asset_properties", "asset_edges", "lineage_event_ids")


def again(records: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The same task runs once more, an hour after the last one: new event, run and materialization ids,
    the same keys and links, every time later than any before (so every row they touch changes)."""
    times = [record["event_time"] for _type, record in records]
    shift = max(times) - min(times) + timedelta(hours=1)
    renamed: dict[str, str] = {}

    def new(old: str | None) -> str | None:
        if old is None:
            return None
        if old not in renamed:
            renamed[old] = str(uuid.uuid4())
        return renamed[old]

    out = []
    for event_type, record in records:
        copy = dict(record, event_id=new(record["event_id"]), event_time=record["event_time"] + shift)
        if "materialization_event_id" in record:
            copy["materialization_event_id"] = new(record["materialization_event_id"])
        copy["run"] = dict(record["run"], flow_run_id=new(record["run"]["flow_run_id"]),
                           task_run_id=new(record["run"]["task_run_id"]))
        out.append((event_type, copy))
    return out


def as_events(records: list[tuple[str, dict]], first_offset: int) -> list[Event]:
    return [to_event(t, r, Position(TOPICS[t], 0, first_offset + i)) for i, (t, r) in enumerate(records)]


def _label(text: str) -> str:
    """A statement's kind: its verb and target (temporary table names kept, schema names dropped)."""
    text = " ".join(text.split())
    if text.startswith("CREATE TEMP TABLE"):
        return "temp table: create if missing + DELETE " + text.split()[6].strip('"')
    match = re.match(r'(COPY|INSERT INTO|SELECT .*? FROM|UPDATE|DELETE FROM) ("?[\w.]+"?(?:\."?\w+"?)?)', text)
    if match is None:
        return text[:60]
    verb, target = match.group(1), match.group(2).replace('"', "").split(".")[-1]
    verb = "SELECT" if verb.startswith("SELECT") else verb
    if verb == "INSERT INTO" and "ON CONFLICT" in text:
        verb = "upsert" if "DO UPDATE" in text else "INSERT ... ON CONFLICT DO NOTHING"
    return f"{verb} {target}"


class StatementCpu:
    """Backend CPU seconds by statement kind, for the statements run through psycopg cursors meanwhile."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.pid = 0

    @contextmanager
    def watching(self, conn: psycopg.Connection) -> Iterator[StatementCpu]:
        self.pid = backend_pid(conn)
        cursor = psycopg.Cursor
        originals = {name: getattr(cursor, name) for name in ("execute", "executemany", "copy")}
        probe = self

        def text_of(cur: psycopg.Cursor, query: Any) -> str:
            return query if isinstance(query, str) else query.as_string(cur.connection)

        def timed(name: str):
            original = originals[name]

            def run(cur: psycopg.Cursor, query: Any, *args: Any, **kwargs: Any) -> Any:
                before = pid_cpu_seconds(probe.pid) or 0.0
                try:
                    return original(cur, query, *args, **kwargs)
                finally:
                    label = _label(text_of(cur, query))
                    probe.seconds[label] += (pid_cpu_seconds(probe.pid) or 0.0) - before
                    probe.calls[label] += 1
            return run

        @contextmanager
        def copy(cur: psycopg.Cursor, statement: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            before = pid_cpu_seconds(probe.pid) or 0.0
            try:
                with originals["copy"](cur, statement, *args, **kwargs) as job:
                    yield job
            finally:
                label = _label(text_of(cur, statement))
                probe.seconds[label] += (pid_cpu_seconds(probe.pid) or 0.0) - before
                probe.calls[label] += 1

        cursor.execute, cursor.executemany, cursor.copy = timed("execute"), timed("executemany"), copy  # type: ignore[method-assign]
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(cursor, name, original)


def run_workload(dsn: str, projection: Any, events: list[Event], batch_size: int) -> tuple[dict[str, float], float]:
    """Write `events` in batches as a live consumer does; (CPU s per statement kind, wall s)."""
    writer = TrackedWriter(projection, OffsetStore(projection.name))
    fence = GenerationFence(projection.name)
    probe = StatementCpu()
    with psycopg.connect(dsn, prepare_threshold=PREPARE) as conn, probe.watching(conn):
        with conn.transaction():
            generation = fence.hold(conn)
        probe.seconds.clear()
        total = 0.0
        wall = time.monotonic()
        for start in range(0, len(events), batch_size):
            chunk = events[start:start + batch_size]
            batch = Batch(events=chunk, messages=len(chunk), effects=projection.reduce(chunk))  # the main thread's
            for event in chunk:
                assert event.position is not None
                key = (event.position.topic, event.position.partition)
                batch.next_offsets[key] = max(batch.next_offsets.get(key, 0), event.position.offset + 1)
            before = pid_cpu_seconds(probe.pid) or 0.0
            with conn.transaction():
                fence.check(conn, generation)
                writer.write(conn, batch)
            total += (pid_cpu_seconds(probe.pid) or 0.0) - before
        wall = time.monotonic() - wall
        conn.execute("SELECT pg_stat_force_next_flush()")
    spent = dict(probe.seconds)
    spent["transaction control (BEGIN, savepoints, COMMIT)"] = total - sum(spent.values())
    return spent, wall


def table_stats(dsn: str) -> dict[str, tuple[int, ...]]:
    time.sleep(1.2)  # the writer's counters reach the shared statistics when it is idle or gone
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup, "
                            "pg_relation_size(relid) FROM pg_stat_user_tables WHERE relname = ANY(%s)",
                            (list(TABLES),)).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def statements(dsn: str) -> list[tuple[Any, ...]] | None:
    """pg_stat_statements of this database since its last reset, or None when the server lacks it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            return conn.execute(
                "SELECT calls, rows, total_exec_time, wal_bytes, shared_blks_dirtied, left(regexp_replace(query, "
                "'\\s+', ' ', 'g'), 90) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE "
                "datname = current_database()) ORDER BY total_exec_time DESC LIMIT 12").fetchall()
        except psycopg.Error:
            return None


def reset_statements(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error:
            pass


def report(title: str, spent: dict[str, float], wall: float, n: int, before: dict, after: dict,
           stmts: list | None) -> None:
    per = 1e6 / n
    print(f"\n== {title}: {n:,} events, {n / wall:,.0f} ev/s written, PostgreSQL CPU s per 1M events: "
          f"{sum(spent.values()) * per:.1f}", flush=True)
    for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"   {seconds * per:6.1f}  {label}")
    for name in TABLES:
        if name in after:
            b = before.get(name, (0,) * 5)
            d = [a - c for a, c in zip(after[name][:3], b[:3], strict=True)]
            hot = f"{d[2] / d[1]:.0%}" if d[1] else "-"
            print(f"   {name}: inserted {d[0]:,}, updated {d[1]:,} (HOT {hot}), dead now {after[name][3]:,}, "
                  f"{after[name][4] / 2**20:.1f} MiB")
    for calls, rows, ms, wal, dirtied, query in stmts or ():
        print(f"   pg_stat_statements: {calls:>5} calls {rows:>8} rows {ms * per / 1000:6.1f} s/1M "
              f"wal {int(wal) / n:6.0f} B/event dirtied {dirtied:>6}  {query}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--only", choices=("properties", "lineage"))
    parser.add_argument("--setup", default="", help="SQL run on the migrated database first (to try a setting)")
    args = parser.parse_args()
    records = generate(args.events)
    first = as_events(records, 0)
    later = as_events(again(records), len(records))
    n_keys = len({e.asset_key for e in first} | {e.record["upstream_key"] for e in first if e.event_type == DEPENDENCY})
    print(f"P2 events: {len(first):,}, keys named {n_keys:,}; batches of {args.batch:,}", flush=True)
    for name, make in (("properties", PropertiesProjection), ("lineage", LineageProjection)):
        if args.only and args.only != name:
            continue
        with scratch(f"pg-share-{name}") as work:
            if args.setup:
                with psycopg.connect(work.dsn, autocommit=True) as conn:
                    conn.execute(args.setup)
            for title, events in (("first sight", first), ("again, the next cycle", later)):
                before = table_stats(work.dsn)
                reset_statements(work.dsn)
                spent, wall = run_workload(work.dsn, make(), events, args.batch)
                report(f"{name}, {title}", spent, wall, len(events), before, table_stats(work.dsn),
                       statements(work.dsn))


if __name__ == "__main__":
    main()
