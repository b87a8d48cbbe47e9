"""`@task`: a function that runs as a tracked task run (called, submitted or mapped).

Options follow Prefect's names. Prefect options that only matter to a Prefect
server (caching, result storage, ...) are accepted and ignored so existing code
keeps working; an unknown option is a TypeError at decoration.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

from assetlog.producer.assets import Asset, distinct_assets
from assetlog.producer.futures import TaskFuture, TaskFutureList, unmapped
from assetlog.producer.runtime import run_task_async, run_task_sync, submit_task

P = ParamSpec("P")
R = TypeVar("R")

RetryDelay = float | int | Sequence[float] | Callable[[int], Sequence[float]] | None

# Accepted for compatibility with Prefect, without effect here.
IGNORED_OPTIONS = frozenset({
    "cache_policy", "cache_key_fn", "cache_expiration", "task_run_name", "retry_jitter_factor",
    "persist_result", "result_storage", "result_serializer", "result_storage_key", "cache_result_in_memory",
    "timeout_seconds", "log_prints", "refresh_cache", "on_completion", "on_failure", "on_rollback",
    "on_commit", "retry_condition_fn", "viz_return_value",
})


class Task(Generic[P, R]):
    """A function plus its task options; calling it creates a task run."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None, description: str | None = None,
                 tags: Iterable[str] | None = None, version: str | None = None, retries: int | None = None,
                 retry_delay_seconds: RetryDelay = None, asset_deps: Sequence[str | Asset] | None = None,
                 **ignored: Any) -> None:
        if not callable(fn):
            raise TypeError(f"'{fn}' must be callable")
        unknown = sorted(set(ignored) - IGNORED_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected task option(s): {', '.join(unknown)}")
        if retries is not None and (not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.description = description or inspect.getdoc(fn)
        self.tags = frozenset(tags or ())
        self.version = version
        self.retries = retries or 0
        self.retry_delay_seconds = retry_delay_seconds
        self.asset_deps: tuple[Asset, ...] = distinct_assets(list(asset_deps or ()))
        self.assets: tuple[Asset, ...] = ()  # what a run materializes: none for a plain task
        self.asset_keys: frozenset[str] = frozenset()
        self.is_async = inspect.iscoroutinefunction(fn)
        self._ignored = dict(ignored)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def _options(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tags": self.tags, "version": self.version,
                "retries": self.retries, "retry_delay_seconds": self.retry_delay_seconds,
                "asset_deps": list(self.asset_deps), **self._ignored}

    def with_options(self, **options: Any) -> Task[P, R]:
        """A copy of this task with some options replaced."""
        return Task(self.fn, **{**self._options(), **options})

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry)."""
        delay = self.retry_delay_seconds
        if callable(delay):
            delay = delay(self.retries)
        if isinstance(delay, Sequence):
            return float(delay[min(attempt, len(delay) - 1)]) if delay else 0.0
        return float(delay or 0)

    def __call__(self, *args: Any, wait_for: Iterable[object] | None = None, **kwargs: Any) -> Any:
        """Run now, in this thread; an async task returns a coroutine to await."""
        if self.is_async:
            return run_task_async(self, args, kwargs, wait_for)
        return run_task_sync(self, args, kwargs, wait_for)

    def submit(self, *args: Any, wait_for: Iterable[object] | None = None, **kwargs: Any) -> TaskFuture[R]:
        """Run on a worker thread; returns a future at once."""
        return submit_task(self, args, kwargs, wait_for)

    def map(self, *args: Any, wait_for: Iterable[object] | None = None, **kwargs: Any) -> TaskFutureList[R]:
        """Submit one task run per element of the iterable arguments (others are passed to all)."""
        signature = inspect.signature(self.fn)
        bound = signature.bind(*args, **kwargs)
        mapped: dict[str, list[Any]] = {}
        static: dict[str, Any] = {}
        lineage: list[object] = []
        for name, value in bound.arguments.items():
            if isinstance(value, unmapped):
                static[name] = value.value
                continue
            if isinstance(value, TaskFuture):
                lineage.append(value)  # each mapped run depends on the run that produced the iterable
                value = value.upstream_result()
            if _is_iterable(value):
                mapped[name] = list(value)
            else:
                static[name] = value
        if not mapped:
            raise ValueError("No iterable parameters were received. Parameters for map must include at least "
                             f"one iterable. Parameter values: {dict(bound.arguments)}")
        lengths = {name: len(values) for name, values in mapped.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError("Received iterable parameters with different lengths. Parameters for map must all "
                             f"be the same length. Got lengths: {lengths}")
        futures: TaskFutureList[R] = TaskFutureList()
        for index in range(next(iter(lengths.values()))):
            arguments = {**static, **{name: values[index] for name, values in mapped.items()}}
            call = inspect.BoundArguments(signature, {n: arguments[n] for n in bound.arguments})
            futures.append(submit_task(self, call.args, call.kwargs, wait_for, lineage))
        return futures

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _is_iterable(value: object) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(*, name: str | None = None, retries: int | None = None, retry_delay_seconds: RetryDelay = None,
         asset_deps: Sequence[str | Asset] | None = None, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorate a function as a task: `@task`, or `@task(name=..., retries=..., asset_deps=[...])`."""
    if fn is not None:
        return Task(fn, **options)
    Task(_probe, **options)  # bad options and asset keys fail here, at decoration

    def decorator(function: Callable[P, R]) -> Task[P, R]:
        return Task(function, **options)

    return decorator


def _probe() -> None:
    """Stands in for the decorated function while options are checked."""
