"""The one attempt loop of every task and flow run, and Prefect's hooks.

`attempts(run)` is a generator holding the whole policy (retries, the retry
condition, the final attempt's outcome); `drive` and `drive_async` step it with a
sync or an async body, so sync and async runs cannot drift apart. A run offers
`retries`, `begin_attempt()`, `may_retry(exc)`, `retry_delay(n)`, `succeeded(result)`
and `failed(exc)` (see `runtime.TaskRun` and `runtime.FlowRun`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, Protocol

from assetlog.producer.states import State

log = logging.getLogger("assetlog.producer")


class Run(Protocol):
    @property
    def retries(self) -> int: ...
    def begin_attempt(self) -> None: ...
    def may_retry(self, error: Exception) -> bool: ...
    def retry_delay(self, attempt: int) -> float: ...
    def succeeded(self, result: Any) -> Any: ...
    def failed(self, error: Exception) -> None: ...


def run_hooks(hooks: Iterable[Callable[..., Any]], owner: object, run: object, state: State[Any]) -> None:
    """Prefect's hooks: `hook(task_or_flow, run, state)`; a failing hook is logged, never raised."""
    for hook in hooks:
        try:
            outcome = hook(owner, run, state)
            if asyncio.iscoroutine(outcome):
                run_coroutine(outcome)
        except Exception:
            log.exception("hook %s of %r failed", getattr(hook, "__name__", hook), owner)


def run_coroutine(coroutine: Any) -> Any:
    """Run a coroutine to its end from sync code, also when an event loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


_CALL = object()  # what `attempts` yields to ask its driver for one call of the body


def attempts(run: Run) -> Generator[object, Any, Any]:
    """The one attempt loop of every task and flow run, sync or async.

    Yields `_CALL` for each attempt (the driver sends back the body's result or
    throws its exception in) and, between attempts, the seconds to wait; returns
    the final result or re-raises the final error.
    """
    attempt = 0
    while True:
        run.begin_attempt()
        try:
            result = yield _CALL
        except Exception as exc:
            if attempt < run.retries and run.may_retry(exc):
                yield run.retry_delay(attempt)
                attempt += 1
                continue
            run.failed(exc)
            raise
        return run.succeeded(result)


def drive(steps: Generator[object, Any, Any], call: Callable[[], Any]) -> Any:
    """Step `attempts` with a sync body, sleeping in this thread between attempts."""
    try:
        request = next(steps)
        while True:
            if request is _CALL:
                try:
                    value = call()
                except Exception as exc:
                    request = steps.throw(exc)
                else:
                    request = steps.send(value)
            else:
                time.sleep(request)  # type: ignore[arg-type]
                request = next(steps)
    except StopIteration as done:
        return done.value


async def drive_async(steps: Generator[object, Any, Any], call: Callable[[], Awaitable[Any]]) -> Any:
    """Step `attempts` with an async body, sleeping without blocking the event loop."""
    try:
        request = next(steps)
        while True:
            if request is _CALL:
                try:
                    value = await call()
                except Exception as exc:
                    request = steps.throw(exc)
                else:
                    request = steps.send(value)
            else:
                await asyncio.sleep(request)  # type: ignore[arg-type]
                request = next(steps)
    except StopIteration as done:
        return done.value


