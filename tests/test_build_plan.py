"""The order of a replay's deferred steps (projections/build_plan.py): no step is handed out that would
wait for another's lock on its table, every step runs once, and the plan never stalls.

Pure: a simulation of connections finishing their steps in every order hypothesis picks. The replay
tests (tests/test_replay_swap.py and others) run the same plan against PostgreSQL.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from assetlog.projections.build_plan import BuildPlan, Step


@st.composite
def plans(draw) -> tuple[list[Step], dict[str, int]]:
    tables = [f"t{i}" for i in range(draw(st.integers(1, 4)))]
    steps: list[Step] = []
    for table in tables:
        # (a replay loads one table, the edges from the history; two show that loads do not overlap either)
        for i in range(draw(st.integers(0, 2))):
            reads = tuple(draw(st.lists(st.sampled_from(tables), unique=True, max_size=2)))
            steps.append(Step(table, "load", f"{table} load {i}", reads=tuple(t for t in reads if t != table)))
        # (a replay defers one key per table, its primary key; two show that keys do not overlap either)
        steps += [Step(table, "key", f"{table} key {i}") for i in range(draw(st.integers(0, 2)))]
        steps += [Step(table, "index", f"{table} index {i}") for i in range(draw(st.integers(0, 4)))]
        steps += [Step(table, "statistics", f"{table} statistics") for _ in range(draw(st.integers(0, 1)))]
    sizes = {table: draw(st.integers(0, 10**9)) for table in tables}
    return draw(st.permutations(steps)), sizes


def conflicts(step: Step, running: list[Step], pending: list[Step], older: dict[str, list[Step]]) -> bool:
    """Whether `step` would wait for a lock (or run before what must come first) on its table; `older`:
    per loaded table, the steps running when its load ended (its VACUUM could not mark their pages)."""
    if step.kind == "statistics" and any(s in running for s in older.get(step.table, ())):
        return True
    on_table = [s for s in running if s.table == step.table]
    still_to_come = [s for s in pending if s.table == step.table]
    if step.kind == "load":  # a primary key being added locks its table exclusively, reads too
        return bool(on_table) or any(s.kind == "key" and s.table in step.reads for s in running)
    if any(s.kind == "load" for s in (*on_table, *still_to_come)):  # a table's loads come before all else on it
        return True
    if step.kind == "key":
        return bool(on_table) or any(step.table in s.reads for s in running)
    if step.kind == "index":
        return any(s.kind in ("key", "statistics") for s in on_table) or any(s.kind == "key" for s in still_to_come)
    return bool(on_table) or bool(still_to_come)


@settings(max_examples=300, deadline=None)
@given(plan_and_sizes=plans(), connections=st.integers(1, 4), data=st.data())
def test_no_step_waits_on_its_table_and_every_step_runs_once(plan_and_sizes, connections, data) -> None:
    steps, sizes = plan_and_sizes
    plan = BuildPlan(steps, sizes)
    running: list[Step] = []
    ran: list[Step] = []
    older: dict[str, list[Step]] = {}
    while not plan.done or running:
        while len(running) < connections:  # idle connections ask for work
            step = plan.take()
            if step is None:
                break
            assert not conflicts(step, running, plan.pending, older), (step, running, plan.pending)
            running.append(step)
            ran.append(step)
        assert running or plan.done, "steps are left and none could start"
        finished = data.draw(st.sampled_from(running)) if running else None
        if finished is not None:
            running.remove(finished)
            plan.finish(finished)
            if finished.kind == "load":
                older.setdefault(finished.table, []).extend(running)
    assert sorted(map(id, ran)) == sorted(map(id, steps))


def test_primary_keys_first_then_the_biggest_tables_and_statistics_after_their_table() -> None:
    small_index, small_stats = Step("small", "index", "i"), Step("small", "statistics", "s")
    big_key, big_index, big_stats = Step("big", "key", "k"), Step("big", "index", "i"), Step("big", "statistics", "s")
    plan = BuildPlan([small_index, small_stats, big_index, big_stats, big_key], {"small": 10, "big": 1000})
    assert plan.take() is big_key
    assert plan.take() is small_index  # the big table's build waits for its key: the small one fills the gap
    assert plan.take() is None  # the small table's statistics wait for its build, the big one's for its key
    plan.finish(big_key)
    assert plan.take() is big_index
    plan.finish(small_index)
    assert plan.take() is small_stats
    assert plan.take() is None
    plan.finish(big_index)
    assert plan.take() is big_stats
    plan.finish(small_stats)
    plan.finish(big_stats)
    assert plan.done and plan.take() is None


def test_a_load_runs_beside_other_tables_builds_and_the_key_of_the_table_it_reads_waits_for_it() -> None:
    history_key, history_index = Step("history", "key", "k"), Step("history", "index", "i")
    edges_load = Step("edges", "load", "derive", reads=("history",))
    edges_key, edges_stats = Step("edges", "key", "k"), Step("edges", "statistics", "s")
    assets_index = Step("assets", "index", "i")
    plan = BuildPlan([history_key, history_index, edges_key, edges_stats, assets_index, edges_load],
                     {"history": 1000, "edges": 500, "assets": 10})
    assert plan.take() is edges_load
    assert plan.take() is assets_index  # the history's key would wait for the load's read; edges' for its load
    assert plan.take() is None
    plan.finish(edges_load)
    assert plan.take() is history_key
    assert plan.take() is edges_key
    plan.finish(assets_index)
    assert plan.take() is None  # the history's build waits for its key, the edges' statistics for theirs
    plan.finish(history_key)
    assert plan.take() is history_index
    plan.finish(edges_key)
    assert plan.take() is edges_stats
    plan.finish(history_index)
    plan.finish(edges_stats)
    assert plan.done


def test_a_loaded_tables_statistics_wait_for_the_steps_that_were_running_when_its_load_ended() -> None:
    """Its VACUUM could not mark the loaded rows all-visible while an older transaction runs
    (tests/test_replay_warm.py shows the visibility map on a real replay)."""
    edges_load, edges_stats = Step("edges", "load", "derive"), Step("edges", "statistics", "s")
    assets_index, assets_stats = Step("assets", "index", "i"), Step("assets", "statistics", "s")
    plan = BuildPlan([edges_load, edges_stats, assets_index, assets_stats], {"edges": 10, "assets": 5})
    assert plan.take() is edges_load
    assert plan.take() is assets_index
    plan.finish(edges_load)  # while the assets' build, started before, still runs
    assert plan.take() is None
    plan.finish(assets_index)
    assert plan.take() is edges_stats
    assert plan.take() is assets_stats
