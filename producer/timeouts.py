"""`timeout_seconds` for task and flow runs, the way Prefect enforces it.

Async bodies are cancelled by the event loop. A sync body in the main thread gets
a SIGALRM (which also interrupts `time.sleep`); in any other thread a watcher
raises the timeout in that thread at its next bytecode, so, as in Prefect, a
long system call there finishes before the timeout lands.
"""

from __future__ import annotations

import asyncio
import ctypes
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class TaskRunTimeoutError(TimeoutError):
    """A task run exceeded its `timeout_seconds`."""


class FlowRunTimeoutError(TimeoutError):
    """A flow run exceeded its `timeout_seconds`."""


def check_timeout(seconds: object) -> float | None:
    """A decoration-time check: None, or a positive number of seconds."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"timeout_seconds must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


def call_with_timeout(fn: Callable[[], T], seconds: float, error: type[TimeoutError]) -> T:
    """`fn()`, interrupted with `error` after `seconds`."""
    message = f"Scope timed out after {seconds:g} second(s)."
    if threading.current_thread() is threading.main_thread():
        def on_alarm(signum: int, frame: Any) -> None:
            raise error(message)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        outer, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
        started = time.monotonic()
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer:  # an enclosing timeout (a flow's, around this task) keeps its deadline
                left = outer - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), outer_interval)
    target = threading.get_ident()
    done = threading.Event()
    fired = threading.Event()
    lock = threading.Lock()

    def watch() -> None:
        if not done.wait(seconds):
            with lock:  # never after the body's thread has left this call
                if not done.is_set():
                    fired.set()
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(error))

    watcher = threading.Thread(target=watch, name="assetlog-timeout", daemon=True)
    watcher.start()
    try:
        return fn()
    except error as exc:
        if fired.is_set() and not exc.args:
            raise error(message) from None
        raise
    finally:
        with lock:
            done.set()


async def await_with_timeout(awaitable: Awaitable[T], seconds: float, error: type[TimeoutError]) -> T:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError as exc:
        if isinstance(exc, error):
            raise
        raise error(f"Scope timed out after {seconds:g} second(s).") from None
