"""Which task runs produced a task's inputs: tracing values by identity, as Prefect does.

Every value a task run returns is remembered, with its direct items, together
with that run; a later task's upstream runs are those whose values, futures or
`wait_for` entries appear anywhere in its arguments (nested in lists, tuples,
sets and dicts). Values are held while the flow run lasts, so an id can never
be reused by another object and mistaken for a result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from assetlog.producer.futures import TaskFuture, TaskFutureList, unmapped

if TYPE_CHECKING:
    from assetlog.producer.runtime import FlowRun, TaskRun

_CONTAINERS = (list, tuple, set, frozenset)
_WALK = (TaskFuture, unmapped, list, tuple, set, frozenset, dict)


def untrackable(value: object) -> bool:
    """Singletons and CPython's cached small ints are shared by unrelated code: their
    identity says nothing about which task produced them (Prefect skips them too)."""
    return value is None or value is True or value is False or value is Ellipsis or (
        type(value) is int and -5 <= value <= 256)  # type: ignore[operator]


class Lineage:
    """The results of one flow run's task runs, by identity."""

    def __init__(self) -> None:
        self._results: dict[int, tuple[object, TaskRun]] = {}

    def link(self, value: object, run: TaskRun) -> None:
        """Remember that `run` produced `value` and its direct items (one level deep)."""
        self._link_one(value, run)
        if isinstance(value, _CONTAINERS):
            for item in value:
                self._link_one(item, run)
        elif isinstance(value, dict):
            for key, item in value.items():
                self._link_one(key, run)
                self._link_one(item, run)

    def _link_one(self, value: object, run: TaskRun) -> None:
        if not untrackable(value):
            self._results[id(value)] = (value, run)  # holding the value keeps its id unique

    def producer_of(self, value: object) -> TaskRun | None:
        entry = self._results.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else None

    def direct_producers(self, values: Iterable[object]) -> list[TaskRun]:
        """The fast path for arguments that are neither collections nor futures."""
        results = self._results
        found: list[TaskRun] = []
        for value in values:
            entry = results.get(id(value))
            if entry is not None and entry[0] is value and entry[1] not in found:
                found.append(entry[1])
        return found

    def upstream_runs(self, values: Iterable[object], flow_run: FlowRun) -> list[TaskRun]:
        """Runs of `flow_run` whose results or futures appear anywhere in `values`, in order."""
        found: dict[int, TaskRun] = {}
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
            if isinstance(value, (*_CONTAINERS, dict)):
                if id(value) in seen:
                    continue
                seen.add(id(value))
                items = [x for pair in value.items() for x in pair] if isinstance(value, dict) else list(value)
                items.reverse()
                stack.extend(items)
        return list(found.values())


def is_plain(values: Iterable[object]) -> bool:
    """No futures and no collections: nothing to resolve, only direct values to trace."""
    for value in values:
        if isinstance(value, _WALK):
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
    return value, False
