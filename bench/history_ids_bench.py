"""H2: what the lineage consumer pays to keep event_id unique on the partitioned history.

A unique index on a partitioned table must contain the partition key, so
`lineage_history`'s key is (event_id, event_time) and "is this id stored, with
which time?" needs either a probe of every partition's index or the registry
`lineage_event_ids` (one index). On a fresh database holding N history rows
spread over 12 months, for batches of 5,000 fresh events (the consumers'
default), it times in the same run:

- lookup: the batch's ids looked up in `lineage_history` (every partition);
- apply: the lineage projection's whole `apply` of the batch (registry COPY,
  history COPY, edges), which is what a consumer pays per batch.

Run against the stack the environment names:
    eval "$(assetlog stack env)" && python bench/history_ids_bench.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

import psycopg
from projection_bench import generate
from support import scratch

from assetlog.projections import LineageProjection, to_event

POPULATE = """
INSERT INTO lineage_history (event_id, event_type, event_time, asset_key, status, materialization_event_id,
                             task_run_id, task_name, payload)
SELECT id, 'materialization', timestamptz '2025-01-01 00:00:00+00' + i * (interval '360 days' / %(rows)s),
       's3://bench/' || (i %% 5000), 'SUCCEEDED', id, gen_random_uuid(), 'task', jsonb_build_object('i', i)
FROM (SELECT i, gen_random_uuid() AS id FROM generate_series(1, %(rows)s) AS i) AS s
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    with scratch("history-ids") as work:
        dsn = work.dsn
        projection = LineageProjection()
        with psycopg.connect(dsn) as conn:
            projection.partitions.ensure(conn, {datetime(2025, m, 2, tzinfo=UTC) for m in range(1, 13)})
            conn.commit()
            conn.execute(POPULATE, {"rows": args.rows})
            conn.execute("INSERT INTO lineage_event_ids SELECT event_id, event_time FROM lineage_history")
            conn.commit()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE lineage_history, lineage_event_ids")
            partitions = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                                      "'lineage_history'::regclass").fetchone()[0]
        events = [to_event(t, r) for t, r in generate(5000 * (args.batches + 2), seed=11)]
        lookups, applies = [], []
        with psycopg.connect(dsn) as conn:
            for i in range(args.batches + 2):
                effects = projection.reduce(events[i * 5000:(i + 1) * 5000])
                started = time.monotonic()
                conn.execute("SELECT event_id, event_time FROM lineage_history WHERE event_id = ANY(%s::uuid[])",
                             (list(effects.history),)).fetchall()
                looked = time.monotonic()
                with conn.transaction():
                    projection.apply(conn, effects)
                if i >= 2:  # the first two warm the caches
                    lookups.append(looked - started)
                    applies.append(time.monotonic() - looked)
        lookup, apply = statistics.median(lookups), statistics.median(applies)
        print(f"{args.rows:,} history rows in {partitions} partitions, batches of 5,000 events, median of "
              f"{args.batches} (the machine may be shared):")
        print(f"  ids looked up in every partition: {lookup * 1000:7.1f} ms")
        print(f"  whole apply with the id registry: {apply * 1000:7.1f} ms   (lookup / apply = {lookup / apply:.2f}x)")


if __name__ == "__main__":
    main()
