"""`@flow`: a function whose call is one flow run, the scope of lineage inference.

When a flow run ends (returned or raised) it waits for the task runs it
submitted, then for its events to be acknowledged by Kafka or safely in the
outbox (see `Publisher.flush`), so a script may exit right after a flow.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from assetlog.producer.runtime import run_flow_async, run_flow_sync

P = ParamSpec("P")
R = TypeVar("R")

# Accepted for compatibility with Prefect, without effect here.
IGNORED_OPTIONS = frozenset({
    "flow_run_name", "retries", "retry_delay_seconds", "task_runner", "timeout_seconds", "validate_parameters",
    "persist_result", "result_storage", "result_serializer", "cache_result_in_memory", "log_prints",
    "on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running",
})


class Flow(Generic[P, R]):
    """A function plus its flow options; calling it creates a flow run."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None, description: str | None = None,
                 version: str | None = None, tags: Iterable[str] | None = None, **ignored: Any) -> None:
        if not callable(fn):
            raise TypeError(f"'{fn}' must be callable")
        unknown = sorted(set(ignored) - IGNORED_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected flow option(s): {', '.join(unknown)}")
        self.fn = fn
        # Prefect's default flow name: the function name with hyphens for underscores.
        self.name = name or getattr(fn, "__name__", type(fn).__name__).replace("_", "-")
        self.description = description or inspect.getdoc(fn)
        self.version = version
        self.tags = frozenset(tags or ())
        self.is_async = inspect.iscoroutinefunction(fn)
        self._ignored = dict(ignored)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn

    def with_options(self, **options: Any) -> Flow[P, R]:
        current = {"name": self.name, "description": self.description, "version": self.version,
                   "tags": self.tags, **self._ignored}
        return Flow(self.fn, **{**current, **options})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the flow now; an async flow returns a coroutine to await."""
        if self.is_async:
            return run_flow_async(self.fn, self.name, args, kwargs)
        return run_flow_sync(self.fn, self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


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
