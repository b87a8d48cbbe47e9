"""`@task`: a function that runs as a tracked task run (called, submitted or mapped).

Options follow Prefect's names and semantics (see `runtime`): retries, retry
delay, jitter and condition, timeout, completion/failure hooks, result caching
with Prefect's default policy, `return_state=True`. An option Assetlog's
runtime cannot honour (it needs Prefect's server, result storage or
transactions) is refused at decoration with a line pointing to the Prefect
bridge; none is accepted and ignored. An unknown option is a TypeError.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

from assetlog.producer.assets import Asset, distinct_assets
from assetlog.producer.cache_policies import BRIDGE, DEFAULT, NO_CACHE, check_cache_options, source_digest
from assetlog.producer.event_builders import EXPLICIT, Upstream
from assetlog.producer.futures import TaskFuture, TaskFutureList, unmapped
from assetlog.producer.runtime import (
    current_flow_run,
    run_generator_task,
    run_task_async,
    run_task_sync,
    submit_task,
)
from assetlog.producer.states import completed, failed
from assetlog.producer.timeouts import check_timeout

P = ParamSpec("P")
R = TypeVar("R")

RetryDelay = float | int | Sequence[float] | Callable[[int], Sequence[float]] | None
Hooks = Iterable[Callable[..., Any]] | None

# Prefect options that only name or display a run in Prefect's UI: nothing a run does or emits
# depends on them, in Prefect or here (kept so the task can be printed or copied with them).
DISPLAY_OPTIONS = frozenset({"task_run_name", "log_prints", "viz_return_value"})
# Options that need Prefect's result storage (checked in `cache_policies`) or its transactions.
STORAGE_OPTIONS = frozenset({"cache_key_fn", "cache_expiration", "refresh_cache", "result_storage",
                             "result_storage_key", "result_serializer", "cache_result_in_memory"})
TRANSACTION_OPTIONS = frozenset({"on_rollback", "on_commit"})


def check_hooks(name: str, hooks: Hooks) -> tuple[Callable[..., Any], ...]:
    if hooks is None:
        return ()
    hooks = tuple(hooks)
    for hook in hooks:
        if not callable(hook):
            raise TypeError(f"Expected callables in '{name}'; got {type(hook).__name__} instead.")
    return hooks


class Task(Generic[P, R]):
    """A function plus its task options; calling it creates a task run."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None, description: str | None = None,
                 tags: Iterable[str] | None = None, version: str | None = None, retries: int | None = None,
                 retry_delay_seconds: RetryDelay = None, retry_jitter_factor: float | None = None,
                 retry_condition_fn: Callable[..., Any] | None = None, timeout_seconds: float | None = None,
                 on_completion: Hooks = None, on_failure: Hooks = None, on_running: Hooks = None,
                 persist_result: bool | None = None,
                 cache_policy: Any = None, asset_deps: Sequence[str | Asset] | None = None,
                 **other: Any) -> None:
        if not callable(fn):
            raise TypeError(f"'{fn}' must be callable")
        unknown = sorted(set(other) - DISPLAY_OPTIONS - STORAGE_OPTIONS - TRANSACTION_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected task option(s): {', '.join(unknown)}")
        for option in sorted(TRANSACTION_OPTIONS & set(other)):
            if other[option]:
                raise TypeError(f"{option}= needs Prefect's transactions, which Assetlog's built-in runtime "
                                f"does not have: {BRIDGE}")
        check_cache_options({**other, "cache_policy": cache_policy})
        if retries is not None and (not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        if retry_condition_fn is not None and not callable(retry_condition_fn):
            raise TypeError(f"Expected `retry_condition_fn` to be callable, got {type(retry_condition_fn).__name__}"
                            " instead.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.description = description or inspect.getdoc(fn)
        self.tags = frozenset(tags or ())
        self.version = version
        self.retries = retries or 0
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_jitter_factor = retry_jitter_factor
        self.retry_condition_fn = retry_condition_fn
        self.timeout_seconds = check_timeout(timeout_seconds)
        self.on_completion = check_hooks("on_completion", on_completion)
        self.on_failure = check_hooks("on_failure", on_failure)
        self.on_running = check_hooks("on_running", on_running)
        # Prefect's rule: a cache policy given (other than NO_CACHE) turns result persistence on,
        # and without persistence nothing is cached.
        self._user_persist_result = persist_result
        self._user_cache_policy = cache_policy
        if persist_result is None and cache_policy is not None and cache_policy is not NO_CACHE:
            persist_result = True
        self.persist_result = persist_result
        if persist_result is False:
            self.cache_policy = None if cache_policy is None else NO_CACHE
        else:
            self.cache_policy = DEFAULT if cache_policy is None else cache_policy
        self.caches = bool(persist_result) and self.cache_policy is DEFAULT
        self._source_digest: str | None = None
        self.asset_deps: tuple[Asset, ...] = distinct_assets(list(asset_deps or ()))
        self.materialized: tuple[Asset, ...] = ()  # what a run materializes: none for a plain task
        self.asset_keys: frozenset[str] = frozenset()
        self.is_async = inspect.iscoroutinefunction(fn)
        self.is_generator = inspect.isgeneratorfunction(fn)
        if inspect.isasyncgenfunction(fn):
            raise TypeError(f"{self.name}: async generator tasks are not supported by Assetlog's built-in "
                            f"runtime; {BRIDGE}")
        if self.is_generator and (self.retries or self.timeout_seconds is not None or self.caches):
            raise TypeError(f"{self.name}: retries, timeout_seconds and result caching are not supported on "
                            f"generator tasks by Assetlog's built-in runtime; {BRIDGE}")
        # One attempt, no timer, no cache, no running hooks: the runtime's fast path.
        self.single_attempt = not self.retries and self.timeout_seconds is None and not self.caches and (
            not self.on_running)
        self.is_plain_sync = not (self.is_async or self.is_generator)
        self._display = {key: value for key, value in other.items() if key in DISPLAY_OPTIONS}
        self.task_run_name = self._display.get("task_run_name")
        self.log_prints = self._display.get("log_prints")
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    # What each run of the task passes on or depends on when no upstream run feeds it, computed once
    # (the runtime's fast path; `materialized` is final once the decorator returns).
    @functools.cached_property
    def passes_on(self) -> tuple[tuple[Asset, bool], ...]:
        return tuple((asset, False) for asset in self.materialized)

    @functools.cached_property
    def passes_on_deps(self) -> tuple[tuple[Asset, bool], ...]:
        return tuple((dep, True) for dep in self.asset_deps)

    @functools.cached_property
    def explicit_upstream(self) -> tuple[Upstream, ...]:
        return tuple(Upstream(dep, EXPLICIT, True) for dep in self.asset_deps)

    def _options(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tags": self.tags, "version": self.version,
                "retries": self.retries, "retry_delay_seconds": self.retry_delay_seconds,
                "retry_jitter_factor": self.retry_jitter_factor, "retry_condition_fn": self.retry_condition_fn,
                "timeout_seconds": self.timeout_seconds, "on_completion": list(self.on_completion),
                "on_failure": list(self.on_failure), "on_running": list(self.on_running), "persist_result": self._user_persist_result,
                "cache_policy": self._user_cache_policy, "asset_deps": list(self.asset_deps), **self._display}

    def with_options(self, **options: Any) -> Task[P, R]:
        """A copy of this task with some options replaced."""
        return Task(self.fn, **{**self._options(), **options})

    def source_digest(self) -> str:
        if self._source_digest is None:
            self._source_digest = source_digest(self.fn)
        return self._source_digest

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry)."""
        delay = self.retry_delay_seconds
        if callable(delay):
            delay = delay(self.retries)
        if isinstance(delay, Sequence):
            return float(delay[min(attempt, len(delay) - 1)]) if delay else 0.0
        return float(delay or 0)

    def __call__(self, *args: Any, wait_for: object = None, return_state: bool = False, **kwargs: Any) -> Any:
        """Run now, in this thread; an async task returns a coroutine to await, a generator task
        a generator. With `return_state=True` the run's final State is returned instead of its
        result (a failure is then returned, not raised), as in Prefect."""
        if self.is_plain_sync and not return_state:
            return run_task_sync(self, args, kwargs, wait_for)
        if self.is_generator:
            if return_state:
                raise TypeError(f"{self.name}: return_state=True is not supported on generator tasks by "
                                f"Assetlog's built-in runtime; {BRIDGE}")
            return run_generator_task(self, args, kwargs, wait_for)
        if self.is_async:
            if return_state:
                return _state_of_async(run_task_async(self, args, kwargs, wait_for))
            return run_task_async(self, args, kwargs, wait_for)
        if return_state:
            try:
                return completed(run_task_sync(self, args, kwargs, wait_for))
            except Exception as exc:
                return failed(exc)
        return run_task_sync(self, args, kwargs, wait_for)

    def submit(self, *args: Any, wait_for: object = None, return_state: bool = False,
               **kwargs: Any) -> Any:
        """Run on one of the flow run's worker threads; returns a future at once (with
        `return_state=True`, waits and returns the run's final State, as in Prefect)."""
        self._check_submittable("submit")
        future = submit_task(self, args, kwargs, wait_for)
        if return_state:
            future.wait()
            error = future.exception()
            return completed(future.result()) if error is None else failed(error)
        return future

    def _check_submittable(self, how: str) -> None:
        if self.is_generator:
            raise TypeError(f"{self.name}: .{how}() of a generator task is not supported by Assetlog's "
                            f"built-in runtime; call it in the flow, or {BRIDGE}")

    def map(self, *args: Any, wait_for: object = None, return_state: bool = False,
            **kwargs: Any) -> Any:
        """Submit one task run per element of the iterable arguments (others are passed to all)."""
        self._check_submittable("map")
        if current_flow_run() is None:
            raise RuntimeError("Unable to determine task runner to use for mapped task runs. If you are "
                               "mapping a task outside of a flow, call the task once per item instead "
                               "(Assetlog has no deferred task runs).")
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
        if return_state:
            futures.wait()
            return [completed(f.result()) if f.exception() is None else failed(f.exception())  # type: ignore[arg-type]
                    for f in futures]
        return futures

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


async def _state_of_async(run: Any) -> Any:
    try:
        return completed(await run)
    except Exception as exc:
        return failed(exc)


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
