"""`@flow`: a function whose call is one flow run, the scope of lineage inference.

When a flow run ends (returned or raised) it waits for the task runs it
submitted, then for its events to be acknowledged by Kafka or safely in the
outbox (see `Publisher.flush`), so a script may exit right after a flow.
Options follow Prefect's semantics (retries, timeout, hooks, `return_state=True`);
those that need a Prefect server or result storage are refused at decoration.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from assetlog.producer.cache_policies import BRIDGE
from assetlog.producer.flow_runs import run_flow_async, run_flow_sync
from assetlog.producer.runtime import as_wait_list
from assetlog.producer.states import completed, failed
from assetlog.producer.tasks import Hooks, check_hooks
from assetlog.producer.timeouts import check_timeout
from assetlog.producer.upstream_tracing import resolve_futures

P = ParamSpec("P")
R = TypeVar("R")

# Prefect options that only name or display a run in Prefect's UI (see tasks.DISPLAY_OPTIONS).
DISPLAY_OPTIONS = frozenset({"flow_run_name", "log_prints"})
# Options that need what only Prefect has: its result storage, task runners, cancellation, validation
# (a value that asks for what the runtime does anyway, e.g. persist_result=False, is accepted).
REFUSED_OPTIONS = frozenset({"persist_result", "result_storage", "result_serializer", "cache_result_in_memory",
                             "task_runner", "on_cancellation", "validate_parameters"})


class Flow(Generic[P, R]):
    """A function plus its flow options; calling it creates a flow run."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None, description: str | None = None,
                 version: str | None = None, tags: Iterable[str] | None = None, retries: int | None = None,
                 retry_delay_seconds: float | None = None, timeout_seconds: float | None = None,
                 on_completion: Hooks = None, on_failure: Hooks = None, on_crashed: Hooks = None,
                 on_running: Hooks = None, **other: Any) -> None:
        if not callable(fn):
            raise TypeError(f"'{fn}' must be callable")
        unknown = sorted(set(other) - DISPLAY_OPTIONS - REFUSED_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected flow option(s): {', '.join(unknown)}")
        harmless = {"persist_result": False, "cache_result_in_memory": True, "validate_parameters": False}
        refused = sorted(option for option in REFUSED_OPTIONS & set(other)
                         if other[option] is not None and not (option in harmless and other[option] is harmless[option]))
        if refused:
            raise TypeError(f"flow option(s) {', '.join(refused)} are not supported by Assetlog's built-in "
                            f"runtime; {BRIDGE}")
        if retries is not None and (not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        if retry_delay_seconds is not None and (isinstance(retry_delay_seconds, bool) or not isinstance(
                retry_delay_seconds, (int, float)) or retry_delay_seconds < 0):
            raise ValueError(f"retry_delay_seconds must be a non-negative number, got {retry_delay_seconds!r}")
        self.fn = fn
        # Prefect's default flow name: the function name with hyphens for underscores.
        self.name = name or getattr(fn, "__name__", type(fn).__name__).replace("_", "-")
        self.description = description or inspect.getdoc(fn)
        self.version = version
        self.tags = frozenset(tags or ())
        self.retries = retries or 0
        self.retry_delay_seconds = retry_delay_seconds or 0
        self.timeout_seconds = check_timeout(timeout_seconds)
        self.on_completion = check_hooks("on_completion", on_completion)
        self.on_failure = check_hooks("on_failure", on_failure)
        self.on_crashed = check_hooks("on_crashed", on_crashed)
        self.on_running = check_hooks("on_running", on_running)
        self.is_async = inspect.iscoroutinefunction(fn)
        self._display = {key: value for key, value in other.items() if key in DISPLAY_OPTIONS}
        self.flow_run_name = self._display.get("flow_run_name")
        self.log_prints = self._display.get("log_prints")
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn

    def with_options(self, **options: Any) -> Flow[P, R]:
        current = {"name": self.name, "description": self.description, "version": self.version,
                   "tags": self.tags, "retries": self.retries, "retry_delay_seconds": self.retry_delay_seconds,
                   "timeout_seconds": self.timeout_seconds, "on_completion": list(self.on_completion),
                   "on_failure": list(self.on_failure), "on_crashed": list(self.on_crashed),
                   "on_running": list(self.on_running), **self._display}
        return Flow(self.fn, **{**current, **options})

    def __call__(self, *args: Any, return_state: bool = False, wait_for: object = None, **kwargs: Any) -> Any:
        """Run the flow now; an async flow returns a coroutine to await. With `return_state=True`
        the run's final State is returned instead of its result (a failure is returned, not raised);
        `wait_for` (futures or results) is waited for first, as in Prefect."""
        if wait_for is not None:
            resolve_futures(as_wait_list(wait_for))
        if self.is_async:
            run = run_flow_async(self, args, kwargs)
            return _state_of_async(run) if return_state else run
        if return_state:
            try:
                return completed(run_flow_sync(self, args, kwargs))
            except Exception as exc:
                return failed(exc, kind="flow")
        return run_flow_sync(self, args, kwargs)

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


async def _state_of_async(run: Any) -> Any:
    try:
        return completed(await run)
    except Exception as exc:
        return failed(exc, kind="flow")


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(*, name: str | None = None, **options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorate a function as a flow: `@flow` or `@flow(name=...)`."""
    if fn is not None:
        return Flow(fn, **options)
    Flow(_probe, **options)  # bad options fail here, at decoration

    def decorator(function: Callable[P, R]) -> Flow[P, R]:
        return Flow(function, **options)

    return decorator


def _probe() -> None:
    """Stands in for the decorated function while options are checked."""
