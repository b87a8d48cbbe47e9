"""Which task runs produced a task's inputs: tracing values by identity, as Prefect does.

Every value a task run returns is remembered, with its direct items, together
with that run; a later task's upstream runs are those whose values, futures or
`wait_for` entries appear anywhere in its arguments (nested in lists, tuples,
sets, dicts, dataclasses and pydantic models, the collections Prefect visits).
Values are held while the flow run lasts, so an id can never be reused by
another object and mistaken for a result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from assetlog.producer.futures import TaskFuture, TaskFutureList, unmapped

if TYPE_CHECKING:
    from assetlog.producer.flow_runs import FlowRun
    from assetlog.producer.runtime import TaskRun

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
    """The results of one flow run's task runs, by identity."""

    def __init__(self) -> None:
        self._results: dict[int, tuple[object, TaskRun | Hidden]] = {}

    def link(self, value: object, run: TaskRun) -> None:
        """Remember that `run` produced `value` and its direct items (one level deep)."""
        self._link_one(value, run)
        if type(value) in _SCALARS:
            return
        for item in _items(value) or ():
            self._link_one(item, run)

    def _link_one(self, value: object, run: TaskRun | Hidden) -> None:
        if not untrackable(value):
            self._results[id(value)] = (value, run)  # holding the value keeps its id unique

    def hide(self, value: object) -> None:
        """`value` (and its direct items) came back from a subflow: in Prefect a subflow's
        return value links to the subflow run, which passes on no assets."""
        self._link_one(value, HIDDEN)
        if type(value) not in _SCALARS:
            for item in _items(value) or ():
                self._link_one(item, HIDDEN)

    def producer_of(self, value: object) -> TaskRun | Hidden | None:
        entry = self._results.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else None

    def direct_producers(self, values: Iterable[object]) -> list[TaskRun | Hidden]:
        """The fast path for arguments that are neither collections nor futures."""
        results = self._results
        found: list[TaskRun | Hidden] = []
        for value in values:
            entry = results.get(id(value))
            if entry is not None and entry[0] is value and entry[1] not in found:
                found.append(entry[1])
        return found

    def upstream_runs(self, values: Iterable[object], flow_run: FlowRun) -> list[TaskRun | Hidden]:
        """Runs of `flow_run` whose results or futures appear anywhere in `values`, in order."""
        found: dict[int, TaskRun | Hidden] = {}
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
            producer = self.producer_of(value)
            if producer is not None:
                found.setdefault(id(producer), producer)
            if type(value) in _SCALARS or id(value) in seen:
                continue
            items = _items(value)
            if items is not None:
                seen.add(id(value))
                items.reverse()
                stack.extend(items)
        return list(found.values())


class Hidden:
    """Stands for a subflow run as the producer of its return value: it passes on nothing."""

    passed_on: tuple[()] = ()


HIDDEN = Hidden()


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
