"""Which of a bulk load's deferred steps may start next, so that no connection waits on another's lock.

After a replay's load, `ShadowTables.create_deferred_indexes` runs the deferred primary keys, the
other index builds and each table's statistics step (VACUUM (ANALYZE)) on a few
connections at once. PostgreSQL's locks decide what may overlap on one table:

- adding a primary key locks the table exclusively: nothing else on it can run meanwhile;
- index builds take SHARE locks, which do not conflict with each other;
- ANALYZE and VACUUM take SHARE UPDATE EXCLUSIVE, which conflicts with a build; and statistics are
  gathered after the table's builds, since ANALYZE also samples the expressions of expression indexes
  (the search index of asset_properties), which must exist by then.

A table made from others once they are loaded (the lineage's edges, from the history) has a load step
(`kind="load"`, `reads` naming the tables it selects from) that comes before every other step on its
table. Its SELECT conflicts only with a primary key being added to a table it reads (ACCESS EXCLUSIVE),
so it runs beside the other tables' builds: alone before them, the edges of a million events took 1.9-2.3
s with one core idle for most of it (bench/README.md, issue 15, eleventh pass). The loaded table's
statistics step (a VACUUM, for its visibility map) also waits for every step that was running when the
load ended: VACUUM marks a page all-visible only if its rows are older than every transaction still
running in the database, and a build that started before the load committed is one.

A connection handed a step that waits for another's lock leaves its core idle. In a 1M-event replay
the statistics steps of the two small tables each waited 0.5-0.7 s behind a GIN build, which runs on
one core (bench/README.md, P3). So a step starts only when nothing it would wait for is running or
still to come on its table; among the ready ones, loads first, then primary keys (every other step on
their table waits for them), then the biggest tables' steps, so the longest builds start early and the
small tables' steps fill the gaps. Whatever runs, some step is always ready while steps remain and none
runs: a load or a table's primary key when nothing runs, else its builds, else its statistics.

Pure: the caller runs the steps and says when each ends (`take`, `finish`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

StepKind = Literal["load", "key", "index", "statistics"]


@dataclass(frozen=True, eq=False)  # compared by identity: two builds may look alike
class Step:
    table: str
    kind: StepKind
    work: object  # what the caller runs (a statement and its comments, the statistics statement, a load)
    reads: tuple[str, ...] = ()  # the other tables a load selects from


class BuildPlan:
    """The steps still to run and those running; `take` hands out the next one that may start now."""

    def __init__(self, steps: Iterable[Step], sizes: Mapping[str, int]) -> None:
        rank = {"load": 0, "key": 1, "index": 2, "statistics": 3}
        steps = list(steps)
        # Loads, then primary keys, then by table, biggest first; a table's builds in the order given.
        self.pending = sorted(steps, key=lambda s: (min(rank[s.kind], 2), -sizes.get(s.table, 0), s.table,
                                                    rank[s.kind]))
        self.running: list[Step] = []
        # Per loaded table, the steps that were running when its load ended (see the module docstring).
        self._older: dict[str, list[Step]] = {}

    def _ready(self, step: Step) -> bool:
        others = [s for s in (*self.running, *self.pending) if s.table == step.table and s is not step]
        if step.kind == "load":  # alone on its table; reading one whose primary key is being added would wait
            return not any(s in self.running for s in others) and not any(
                s.kind == "key" and s.table in step.reads for s in self.running)
        if any(s.kind == "load" for s in others):  # a table's loads come before anything else on it
            return False
        if step.kind == "key":  # nor may the key start under a running load's read
            return not any(s in self.running for s in others) and not any(
                step.table in s.reads for s in self.running)
        if step.kind == "index":  # (a table's statistics never start before its builds have ended)
            return not any(s.kind == "key" for s in others)
        # statistics: after every other step on its table, and after the transactions older than its load
        return not others and not any(s in self.running for s in self._older.get(step.table, ()))

    def take(self) -> Step | None:
        """The next step that may start now (it counts as running until `finish`), or None: wait for one
        to finish, or stop if none is pending (`done`)."""
        for step in self.pending:
            if self._ready(step):
                self.pending.remove(step)
                self.running.append(step)
                return step
        if not self.running and self.pending:  # cannot happen (module docstring); never wait forever
            raise RuntimeError(f"no deferred step can start: {self.pending}")
        return None

    def finish(self, step: Step) -> None:
        self.running.remove(step)
        if step.kind == "load":
            self._older.setdefault(step.table, []).extend(self.running)

    @property
    def done(self) -> bool:
        return not self.pending
