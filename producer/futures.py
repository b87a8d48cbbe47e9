"""Futures of submitted task runs, and the markers `.map()` understands.

A future remembers which task run it belongs to, so passing it to another task
is how lineage flows through `.submit()`, `.map()` and `wait_for=`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from assetlog.producer.runtime import TaskRun

R = TypeVar("R")


class UpstreamTaskError(Exception):
    """A task was given the future of a task run that failed, so it did not run."""


class TaskFuture(Generic[R]):
    """The eventual result of a submitted task run."""

    def __init__(self, task_run: TaskRun, future: concurrent.futures.Future[R]) -> None:
        self.task_run = task_run
        self._future = future

    @property
    def task_run_id(self) -> str:
        return self.task_run.id

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the task run finished (successfully or not), or `timeout` passed."""
        concurrent.futures.wait([self._future], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The task's return value; re-raises its exception when it failed."""
        try:
            return self._future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise
        except Exception as exc:
            if raise_on_failure:
                raise
            return exc  # type: ignore[return-value]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout=timeout)

    async def wait_async(self) -> None:
        await asyncio.wrap_future(self._future)

    def add_done_callback(self, fn: Any) -> None:
        self._future.add_done_callback(lambda _: fn(self))

    def upstream_result(self) -> R:
        """The result for a downstream task; a failure becomes an `UpstreamTaskError`."""
        try:
            return self._future.result()
        except Exception as exc:
            raise UpstreamTaskError(
                f"Upstream task run '{self.task_run.id}' ({self.task_run.task.name}) did not reach a "
                f"'COMPLETED' state: {type(exc).__name__}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"TaskFuture({self.task_run.task.name!r}, {self.task_run.id!r}, {state})"


class TaskFutureList(list[TaskFuture[R]]):
    """What `.map()` returns: a list of futures that can be waited on or resolved at once."""

    def wait(self, timeout: float | None = None) -> None:
        concurrent.futures.wait([f._future for f in self], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        return [f.result(timeout=timeout, raise_on_failure=raise_on_failure) for f in self]


class unmapped(Generic[R]):
    """Pass an iterable to every mapped task run as a whole instead of mapping over it."""

    def __init__(self, value: R) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"


def wait(futures: Iterable[TaskFuture[Any]], timeout: float | None = None) -> None:
    """Block until every future is done (or `timeout` passed)."""
    concurrent.futures.wait([f._future for f in futures], timeout=timeout)
