"""`assetlog replay`: rebuild projections from the topics, then swap them in or audit the live ones.

The topics are the source of truth; the tables can always be rebuilt from
them. A replay mirrors the live tables into a shadow schema and reads every
partition from the beginning (or, for the append-only history, from
`--since`) up to the end offsets captured at the start, while the live tables
keep serving reads and the live consumers keep running. Then:

- **swap**: catch up with what arrived meanwhile; in one transaction, pause
  the live consumers (their projection's generation row, `fencing.py`), read
  the last few messages, lock every table readers use, move the live tables
  out and the shadow tables in, store the offsets the shadow reached as the
  live consumers' offsets, and advance the generation. Readers wait a moment
  and then see the new tables, never an empty or partial one; live consumers
  drop what they had in flight and continue exactly where the rebuild ended.
  After the commit, the tables' read path is warmed (`projections/warm.py`).
- **check**: pause the live consumers, bring the shadow to exactly their
  offsets, and compare the tables row for row in that frozen state; drift is
  rows missing, extra or different. Their offsets are also compared with the
  topics' end: a consumer behind it, or stuck, is reported (`behind.py`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from typing import Any

import psycopg
from confluent_kafka import TopicPartition
from psycopg import sql

from assetlog.config import Settings
from assetlog.consumers.behind import behind_the_end, wait_until_at
from assetlog.consumers.fencing import advance, pause
from assetlog.consumers.kafka_consumer import metadata_consumer
from assetlog.consumers.offsets import OffsetStore
from assetlog.consumers.positions import end_offsets, event_partitions
from assetlog.consumers.progress import Progress
from assetlog.consumers.replay_result import ReplayResult, nested
from assetlog.consumers.replay_workers import ParallelReader
from assetlog.consumers.retry import Backoff
from assetlog.consumers.runner import DEFAULT_BATCH_SIZE
from assetlog.consumers.shadow_reader import Offsets, Partition, ShadowReader, lag
from assetlog.errors import AssetlogError
from assetlog.projections import PROJECTION_TABLES, PROJECTIONS, SWAPPED_TABLES, autovacuum, require_migrated
from assetlog.projections.build_plan import Step
from assetlog.projections.compare import compare_table
from assetlog.projections.lineage import derive_edges, seed_from_history
from assetlog.projections.migrate import ADVISORY_LOCK_KEY
from assetlog.projections.shadow import ShadowError, ShadowTables, dependents, drop_retired, live_schema
from assetlog.projections.warm import not_warmed, warm_or_say_why, warm_standby_or_say_why

log = logging.getLogger("assetlog.replay")

# Session advisory lock: one replay or check per database at a time ("assetlog" + 1).
REPLAY_LOCK_KEY = 0x61737365746C6F68
# The swap waits at most this long for a table lock, then gives the tables back and tries again;
# below PostgreSQL's deadlock_timeout, so a reader caught in a lock cycle with the swap is never the
# one cancelled.
LOCK_TIMEOUT = 0.5
SWAP_ATTEMPTS = 30
SHORT_SWAP_ATTEMPTS = 3
# Below this many messages to read, worker processes cost more to start than they save.
PARALLEL_FROM = 100_000
CATCH_UP_ROUNDS = 5
# Every table readers may query: the swap locks them all, so no reader transaction spans it.
READER_TABLES = (*(t for tables in SWAPPED_TABLES.values() for t in tables), "schema_migrations")
# After a swap, loading one relation into shared buffers may take this long (a lock held on it, a slow
# disk); past it the warm stops and the replay says how to finish it.
WARM_TIMEOUT = 120.0


class Replay:
    """One `assetlog replay` run; `run()` returns a ReplayResult (check: with the drift per table)."""

    def __init__(self, settings: Settings, projection: str, *, check: bool = False, since: datetime | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: Progress | None = None,
                 lock_timeout: float = LOCK_TIMEOUT, examples: int = 3, workers: int | None = None,
                 grace: float = 5.0, warm: bool = True, warm_timeout: float = WARM_TIMEOUT) -> None:
        if projection != "all" and projection not in PROJECTIONS:
            raise AssetlogError(f"no projection named {projection!r}; choose all or one of: {', '.join(PROJECTIONS)}")
        self.names = list(PROJECTIONS) if projection == "all" else [projection]
        if since is not None and self.names != ["lineage"]:
            raise AssetlogError(
                "--since only applies to `replay lineage`: the history is append-only, so its older rows can be "
                "kept while the tail is re-read; current properties depend on every event, so `properties` "
                "(and `all`) always replay from the beginning")
        self.settings = settings
        self.dsn = settings.require_postgres()
        settings.require_kafka()
        self.check = check
        self.since = since
        self.batch_size = batch_size
        self.progress = progress or Progress(f"replay {projection}", "off")
        self.lock_timeout = lock_timeout
        self.examples = examples
        self.workers = workers  # None: by the amount to read and the CPUs
        self.grace = grace  # check: how long live consumers may take to reach the end seen at the start
        self.warm = warm  # swap: load the swapped-in read path into shared buffers afterwards
        self.warm_timeout = warm_timeout
        self.result = ReplayResult(projection, self.names, "check" if check else "swap",
                                   since.isoformat() if since else None)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    # --- the run ------------------------------------------------------------------------------------

    def run(self) -> ReplayResult:
        started = time.monotonic()
        control = psycopg.connect(self.dsn, autocommit=True, application_name="assetlog.replay")
        shadow: ShadowTables | None = None
        reader: ShadowReader | ParallelReader | None = None
        try:
            require_migrated(control)
            row = control.execute("SELECT pg_try_advisory_lock(%s)", (REPLAY_LOCK_KEY,)).fetchone()
            if not row or not row[0]:
                raise AssetlogError("another replay is running on this database; wait for it to finish")
            live = live_schema(control)
            tables = [t for name in self.names for t in SWAPPED_TABLES[name]]
            if not self.check and (found := dependents(control, live, tables)):
                raise ShadowError(f"{', '.join(found)} depend on the tables a replay swaps; drop them before the "
                                  "replay and create them again after it")
            # Keys built after the load only when the replay swaps (a check compares by the live keys).
            keys_after_load = () if self.check else [t for name in self.names
                                                     for t in getattr(PROJECTIONS[name], "keys_after_load", ())]
            shadow = ShadowTables(live, tables, keys_after_load=keys_after_load)
            shadow.create(control)  # secondary indexes only once loaded, and only to swap them in
            partitions = self._partitions()
            start = {tp: 0 for tp in partitions}
            if self.since is not None:
                start = self._seed_since(control, live, shadow, partitions)
            if self.check:
                self._ends = self._high_watermarks(partitions)
                first = {n: self._live_offsets(control, n, partitions) for n in self.names}
                self._first = first
            else:
                ends = self._high_watermarks(partitions)
                first = {n: ends for n in self.names}
            reader = self._reader(shadow, start, first)
            self._timed("read", lambda: reader.read_to(first, self._stop.is_set, bulk=True))
            self.result.read_seconds = self.result.phases["read"]
            if self.check:  # no deferred builds to run the loads beside: at once (see `_loads`)
                for load in self._loads(shadow):
                    self._timed("edges", lambda step=load: step.work(control))  # type: ignore[operator]
            if self.check:
                self._compare(control, live, shadow, reader, partitions)
            else:
                self._swap(control, shadow, reader, partitions)
            self._record(reader)
        finally:
            self.progress.close()
            self._stop.set()
            if reader is not None:
                reader.close()
            self._clean_up(control, shadow)
        self.result.seconds = time.monotonic() - started
        if not self.check:
            self.result.warm = self._warm()
        return self.result

    def _warm(self) -> dict[str, Any]:
        """Load what the swap brought in into shared buffers: its tables are new relations, and their
        deferred indexes were built past the buffers, so the first walks would read those pages from
        outside them (the device, unless the OS cache still holds them).

        Only once the swap has committed, the old tables are dropped (freeing their buffers) and the
        replay's lock is released: no lock of the swap is held meanwhile, and readers already query
        the new tables while they warm. Before the command prints its result, which reports it. The
        replay has succeeded by then, so nothing here may fail it: a warm that cannot run returns why.
        """
        tables = [t for name in self.names for t in SWAPPED_TABLES[name]]
        if not self.warm:
            return not_warmed("turned off (--no-warm)", tables)
        try:
            report = warm_or_say_why(self.dsn, tables, self.warm_timeout)
            standby = self.settings.postgres_readonly_dsn
            if standby:
                report["standby"] = warm_standby_or_say_why(self.dsn, standby, tables, self.warm_timeout)
            return report
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM during the warm: the swap stands
            return not_warmed("interrupted", tables)

    def _timed(self, phase: str, work) -> Any:
        self.progress.set_phase(phase)
        started = time.monotonic()
        try:
            return work()
        finally:
            self.result.phases[phase] = self.result.phases.get(phase, 0.0) + time.monotonic() - started

    def _reader(self, shadow: ShadowTables, start: Offsets,
                first: dict[str, Offsets]) -> ShadowReader | ParallelReader:
        workers = self.workers
        if workers is None:
            big = lag({n: dict(start) for n in self.names}, first) / len(self.names) >= PARALLEL_FROM
            workers = min(os.cpu_count() or 1, 4) if big else 1
        self.result.workers = workers
        if workers <= 1:
            return ShadowReader(self.settings, self.names, shadow.schema, start, batch_size=self.batch_size,
                                progress=self.progress)
        return ParallelReader(self.settings, self.names, shadow.schema, start, workers=workers,
                              batch_size=self.batch_size, progress=self.progress)

    def _record(self, reader: ShadowReader | ParallelReader) -> None:
        self.result.messages = self.progress.done
        for name, stats in reader.writer_stats().items():
            self.result.written[name] = {"messages": stats.messages, "events": stats.events,
                                         "dead_letters": stats.dead_letters, "batches": stats.batches,
                                         "retries": stats.retries}
            self.result.offsets[name] = nested(reader.positions[name])

    def _clean_up(self, control: psycopg.Connection, shadow: ShadowTables | None) -> None:
        try:
            if control.closed:
                return
            if shadow is not None:
                shadow.drop(control)
            drop_retired(control)
            control.execute("SELECT pg_advisory_unlock(%s)", (REPLAY_LOCK_KEY,))
        except psycopg.Error as exc:  # the server went away: the next replay drops the leftovers
            log.warning("replay: could not drop the shadow tables: %s", exc)
        finally:
            control.close()

    # --- Kafka ---------------------------------------------------------------------------------------

    def _partitions(self) -> list[Partition]:
        return event_partitions(self.settings)

    def _high_watermarks(self, partitions: list[Partition]) -> Offsets:
        return end_offsets(self.settings, partitions)

    def _since_offsets(self, partitions: list[Partition]) -> Offsets:
        """Per partition, the first offset whose Kafka timestamp is at or after --since (else its end)."""

        assert self.since is not None
        millis = int(self.since.timestamp() * 1000)
        consumer, _ = metadata_consumer(self.settings, "replay")
        try:
            found = consumer.offsets_for_times([TopicPartition(t, p, millis) for t, p in partitions], timeout=30)
        finally:
            consumer.close()
        ends = self._high_watermarks(partitions)
        return {(f.topic, f.partition): f.offset if f.offset >= 0 else ends[(f.topic, f.partition)] for f in found}

    # --- PostgreSQL ----------------------------------------------------------------------------------

    @staticmethod
    def _live_offsets(conn: psycopg.Connection, name: str, partitions: list[Partition]) -> Offsets:
        stored = OffsetStore(name).all(conn)
        return {tp: stored.get(tp, 0) for tp in partitions}

    def _seed_since(self, control: psycopg.Connection, live: str, shadow: ShadowTables,
                    partitions: list[Partition]) -> Offsets:
        """Copy the history older than --since into the shadow; returns where reading starts.

        In one snapshot, so the live offsets and rows agree: a partition the
        live consumer has not reached --since in yet starts at its offset.
        """
        wanted = self._since_offsets(partitions)
        with control.transaction():
            control.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            stored = self._live_offsets(control, "lineage", partitions)
            start = {tp: min(wanted[tp], stored[tp]) for tp in partitions}
            self.result.seeded_history_rows = seed_from_history(control, live, shadow.schema, start)
            control.execute(sql.SQL(
                'INSERT INTO {} SELECT * FROM {} AS d WHERE projection = %s AND EXISTS (SELECT FROM '
                'unnest(%s::text[], %s::int[], %s::bigint[]) AS s(topic, part, next_offset) '
                'WHERE d.topic = s.topic AND d.partition = s.part AND d."offset" < s.next_offset)'
            ).format(sql.Identifier(shadow.schema, "dead_letters"), sql.Identifier(live, "dead_letters")),
                ("lineage", [t for t, _ in partitions], [p for _, p in partitions], [start[tp] for tp in partitions]))
            OffsetStore("lineage", shadow.schema).save(control, start)
        return start

    def _compare(self, control: psycopg.Connection, live: str, shadow: ShadowTables,
                 reader: ShadowReader | ParallelReader, partitions: list[Partition]) -> None:
        """Pause the live consumers, bring the shadow to their offsets, compare in that frozen state; name
        the partitions where they are short of the topics' end."""
        self.progress.set_phase("waiting for live consumers")
        wait_until_at(self._ends, lambda: {n: self._live_offsets(control, n, partitions) for n in self.names},
                      self.grace, self._stop.is_set)
        with control.transaction():
            self.progress.set_phase("pausing live consumers")
            pause(control, self.names)
            frozen = {n: self._live_offsets(control, n, partitions) for n in self.names}
            self.result.behind = behind_the_end(self._ends, self._first, frozen)
            for name in self.names:
                ahead = [tp for tp in partitions if reader.positions[name][tp] > frozen[name][tp]]
                if ahead:
                    raise AssetlogError(f"the live {name} offsets moved back during the check ({ahead[0][0]}"
                                        f"[{ahead[0][1]}]); another replay swapped the tables? run the check again")
            self._timed("catch-up", lambda: reader.read_to(frozen, self._stop.is_set))

            def compare() -> None:
                for name in self.names:
                    for table in PROJECTION_TABLES[name]:
                        self.result.tables.append(compare_table(control, live, shadow.schema, table,
                                                                examples=self.examples))
                    drift = compare_table(control, live, shadow.schema, "dead_letters", projection=name,
                                          examples=self.examples)
                    drift.table = f"dead_letters ({name})"
                    self.result.tables.append(drift)

            self._timed("compare", compare)

    def _swap(self, control: psycopg.Connection, shadow: ShadowTables, reader: ShadowReader | ParallelReader,
              partitions: list[Partition]) -> None:
        parallel = max(2, self.result.workers)
        self._timed("indexes", lambda: shadow.create_deferred_indexes(self.dsn, parallel, analyze=True,
                                                                      loads=self._loads(shadow)))
        while self.result.rounds < CATCH_UP_ROUNDS:  # unlocked rounds until little is left
            ends = self._high_watermarks(partitions)
            targets = {n: ends for n in self.names}
            if reader.lag(targets) <= 2 * self.batch_size * len(self.names):
                break
            self.result.rounds += 1
            self._timed("catch-up", lambda t=targets: reader.read_to(t, self._stop.is_set))
        row = control.execute("SELECT setting::float / 1000 FROM pg_settings WHERE name = 'deadlock_timeout'"
                              ).fetchone()
        deadlock = row[0] if row else 1.0
        short = min(self.lock_timeout, deadlock / 2)
        backoff = Backoff(initial=0.05, maximum=1.0)  # ~23 s of waits over the attempts, besides the lock waits
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            self.result.swap_attempts = attempt
            # After a few short tries, wait past deadlock_timeout: only a lock request that has waited
            # that long makes PostgreSQL cancel an autovacuum holding a live table (a fresh replay's
            # tables are often being vacuumed). Waiting that long, the swap runs the deadlock check
            # before any reader queued behind it, so in a lock cycle it is still the one that yields.
            # At once when autovacuum alone holds the tables: short tries could only wait it out.
            short_try = attempt <= SHORT_SWAP_ATTEMPTS and not autovacuum.holds_alone(control, [
                *((shadow.live, t) for t in READER_TABLES), *((shadow.schema, t) for t in shadow.tables)])
            timeout = short if short_try else deadlock + short
            try:
                self._timed("swap", lambda t=timeout: self._swap_once(control, shadow, reader, partitions, t))
                return
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                log.info("replay: tables busy (attempt %d); retrying the swap", attempt)
                time.sleep(backoff.next_delay())
        raise AssetlogError(f"could not lock the tables for the swap in {SWAP_ATTEMPTS} attempts (long-running "
                            "queries?); nothing was changed, run the replay again")

    def _loads(self, shadow: ShadowTables) -> list[Step]:
        """What the bulk read left out, to be made from the loaded tables: the edges (`LineageProjection.
        edges_later`), derived from the history beside the other tables' index builds."""
        if "lineage" not in self.names:
            return []
        return [Step("asset_edges", "load", lambda conn: derive_edges(conn, shadow.schema),
                     reads=("lineage_history",))]

    def _swap_once(self, control: psycopg.Connection, shadow: ShadowTables, reader: ShadowReader | ParallelReader,
                   partitions: list[Partition], lock_timeout: float) -> None:
        with control.transaction():
            control.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout * 1000)}ms",))
            # 1. Pause the live consumers: their next batch waits on this row, then sees a new generation.
            pause(control, self.names)
            generations = advance(control, self.names)
            # 2. The last messages, up to the end as it is now.
            self.progress.set_phase("final catch-up")
            ends = self._high_watermarks(partitions)
            reader.read_to({n: ends for n in self.names}, self._stop.is_set)
            shadow.resume_autovacuum(control)  # off while the tables loaded (projections/autovacuum.py)
            mismatched = shadow.mismatches(control)
            if mismatched:
                raise ShadowError(f"the live tables {', '.join(mismatched)} changed shape during the replay "
                                  "(a migration?); nothing was swapped, run the replay again")
            # 3. No migration in between, and no reader transaction spanning the swap.
            control.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            control.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(shadow.live, t) for t in READER_TABLES)))
            if found := dependents(control, shadow.live, shadow.tables):  # created during the replay
                raise ShadowError(f"{', '.join(found)} depend on the tables a replay swaps; nothing was swapped: "
                                  "drop them, run the replay again, then create them again")
            # 4. Tables, offsets and dead letters change hands together.
            shadow.swap(control)
            live_offsets, shadow_offsets = (sql.Identifier(s, "consumer_offsets") for s in (shadow.live, shadow.schema))
            live_letters, shadow_letters = (sql.Identifier(s, "dead_letters") for s in (shadow.live, shadow.schema))
            control.execute(sql.SQL("DELETE FROM {} WHERE projection = ANY(%s)").format(live_offsets), (self.names,))
            control.execute(sql.SQL(
                "INSERT INTO {} (projection, topic, partition, next_offset) "
                "SELECT projection, topic, partition, next_offset FROM {} WHERE projection = ANY(%s)"
            ).format(live_offsets, shadow_offsets), (self.names,))
            control.execute(sql.SQL(
                'DELETE FROM {} AS l WHERE projection = ANY(%s) AND NOT EXISTS (SELECT FROM {} AS s WHERE '
                's.projection = l.projection AND s.topic = l.topic AND s.partition = l.partition '
                'AND s."offset" = l."offset")'
            ).format(live_letters, shadow_letters), (self.names,))
            control.execute(sql.SQL(
                "INSERT INTO {} SELECT * FROM {} WHERE projection = ANY(%s) ON CONFLICT DO NOTHING"
            ).format(live_letters, shadow_letters), (self.names,))
        self.result.generations = generations
