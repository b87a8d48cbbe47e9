"""Which task runs produced a task's inputs: tracing values by identity, as Prefect does.

Every value a task run returns is remembered, with its direct items, together
with what that run passes on; a later task's upstream runs are those whose values,
futures or `wait_for` entries appear anywhere in its arguments (nested in lists,
tuples, sets, dicts, dataclasses and pydantic models, the collections Prefect visits).
Values are held while the flow run lasts, so an id can never be reused by
another object and mistaken for a result.

The task runs themselves are not held: a flow of many tasks would otherwise keep
every run (and a tuple per result) alive until it ends, and the garbage collector's
full passes over that growing heap cost a materializing task several microseconds.
What a run passes on is final once its body started (and usually a tuple its task
computed once), so two plain dicts keyed by the value's id hold all that is needed,
and a result that is not a container (a number, a string, a path) adds no object the
collector must visit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from assetlog.producer.futures import TaskFuture, TaskFutureList, unmapped

if TYPE_CHECKING:
    from assetlog.producer.assets import Asset
    from assetlog.producer.flow_runs import FlowRun
    from assetlog.producer.runtime import TaskRun

# What a task run passes on to the runs it feeds: (asset, came from some asset_deps).
PassedOn = tuple[tuple["Asset", bool], ...]

_CONTAINERS = (list, tuple, set, frozenset)
_WALK = (TaskFuture, unmapped, list, tuple, set, frozenset, dict, BaseModel)
# Arguments of these types hold nothing to trace or resolve: the common case, checked first.
_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})


def _is_record(value: object) -> bool:
    """A dataclass instance or a pydantic model: Prefect looks into their fields."""
    return isinstance(value, BaseModel) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type))


def _items(value: object) -> list[object] | None:
    """The direct items of a collection Prefect visits (dict keys and values, fields), else None."""
    if isinstance(value, _CONTAINERS):
        return list(value)
    if isinstance(value, dict):
        return [x for pair in value.items() for x in pair]
    if isinstance(value, BaseModel):
        return list(dict(value).values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [getattr(value, f.name) for f in dataclasses.fields(value)]
    return None


def untrackable(value: object) -> bool:
    """Singletons and CPython's cached small ints are shared by unrelated code: their
    identity says nothing about which task produced them (Prefect skips them too)."""
    return value is None or value is True or value is False or value is Ellipsis or (
        type(value) is int and -5 <= value <= 256)  # type: ignore[operator]


class Lineage:
    """The results of one flow run's task runs, by identity, with what their runs pass on."""

    def __init__(self) -> None:
        self._values: dict[int, object] = {}  # holding the value keeps its id unique
        self._passed_on: dict[int, PassedOn] = {}

    def link(self, value: object, run: TaskRun) -> None:
        """Remember that `run` produced `value` and its direct items (one level deep)."""
        self._link_one(value, run.passed_on)
        if type(value) in _SCALARS:
            return
        for item in _items(value) or ():
            self._link_one(item, run.passed_on)

    def _link_one(self, value: object, passed_on: PassedOn) -> None:
        if not untrackable(value):
            key = id(value)
            # In this order: a task run on another thread that finds the value finds its entry too.
            self._passed_on[key] = passed_on
            self._values[key] = value

    def hide(self, value: object) -> None:
        """`value` (and its direct items) came back from a subflow: in Prefect a subflow's
        return value links to the subflow run, which passes on no assets."""
        self._link_one(value, ())
        if type(value) not in _SCALARS:
            for item in _items(value) or ():
                self._link_one(item, ())

    def passed_on_with(self, value: object) -> PassedOn | None:
        """What the run that produced `value` passes on (None: no task run of this flow run did)."""
        key = id(value)
        return self._passed_on[key] if self._values.get(key, _ABSENT) is value else None

    def direct_producers(self, values: Iterable[object]) -> list[PassedOn]:
        """The fast path for arguments that are neither collections nor futures: what their
        producers pass on (each distinct tuple once; empty ones, which add nothing, left out)."""
        known, passed = self._values, self._passed_on
        found: list[PassedOn] = []
        for value in values:
            key = id(value)
            if key in known and known[key] is value:
                passed_on = passed[key]
                if passed_on and not any(p is passed_on for p in found):
                    found.append(passed_on)
        return found

    def upstream_runs(self, values: Iterable[object], flow_run: FlowRun) -> list[TaskRun | PassedOn]:
        """Runs of `flow_run` whose results or futures appear anywhere in `values`, in order: a
        future's run itself (it may not have started yet: read what it passes on once it is
        waited for), else what the producing run passes on."""
        found: dict[int, TaskRun | PassedOn] = {}
        seen: set[int] = set()
        stack = list(values)
        stack.reverse()
        while stack:
            value = stack.pop()
            if isinstance(value, TaskFuture):
                if value.task_run.flow_run is flow_run:  # lineage never crosses flow runs
                    found.setdefault(id(value.task_run), value.task_run)
                continue
            if isinstance(value, unmapped):
                stack.append(value.value)
                continue
            passed_on = self.passed_on_with(value)
            if passed_on:
                found.setdefault(id(passed_on), passed_on)
            if type(value) in _SCALARS or id(value) in seen:
                continue
            items = _items(value)
            if items is not None:
                seen.add(id(value))
                items.reverse()
                stack.extend(items)
        return list(found.values())


_ABSENT = object()


def is_plain(values: Iterable[object]) -> bool:
    """No futures and no collections: nothing to resolve, only direct values to trace."""
    for value in values:
        if type(value) in _SCALARS:
            continue
        if isinstance(value, _WALK) or _is_record(value):
            return False
    return True


def resolve_futures(value: Any) -> Any:
    """`value` with every future (also inside lists, tuples, sets and dicts) replaced by its
    result, waiting for it; collections without futures are returned as they are."""
    resolved, _ = _resolve(value)
    return resolved


def _resolve(value: Any) -> tuple[Any, bool]:
    if isinstance(value, TaskFuture):
        return value.upstream_result(), True
    kind = type(value)
    if kind in (list, tuple, set, frozenset, TaskFutureList) or (kind.__base__ is tuple and hasattr(value, "_fields")):
        items = [_resolve(item) for item in value]
        if not any(changed for _, changed in items):
            return value, False
        values = [item for item, _ in items]
        if kind is TaskFutureList:
            return values, True  # what .map() returned becomes the list of results
        if kind in (list, tuple, set, frozenset):
            return kind(values), True
        return kind(*values), True  # a namedtuple
    if kind is dict:
        pairs = [(_resolve(k), _resolve(v)) for k, v in value.items()]
        if not any(ck or cv for (_, ck), (_, cv) in pairs):
            return value, False
        return {k: v for (k, _), (v, _) in pairs}, True
    if isinstance(value, BaseModel):  # as Prefect: rebuilt without validation, fields set kept
        fields = dict(value)
        resolved = {name: _resolve(item) for name, item in fields.items()}
        if not any(changed for _, changed in resolved.values()):
            return value, False
        return value.model_construct(_fields_set=value.model_fields_set,
                                     **{name: item for name, (item, _) in resolved.items()}), True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        resolved = {name: _resolve(getattr(value, name)) for name in names}
        if not any(changed for _, changed in resolved.values()):
            return value, False
        return dataclasses.replace(value, **{name: item for name, (item, _) in resolved.items()}), True
    return value, False
