"""Running a flow: its attempts, timeout and hooks, then waiting for its task runs and
flushing its events; a subflow's return value hides its producers from the parent.

`FlowRun` is one run's state: its id, what its task runs returned (`lineage`), its
submitted task runs and the publishers its task runs used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from assetlog.producer.attempts import attempts, drive, drive_async, run_hooks
from assetlog.producer.context import current_flow_run, enter_flow_run, leave_flow_run
from assetlog.producer.event_builders import new_event_id
from assetlog.producer.recording_errors import LineageNotRecorded
from assetlog.producer.states import completed, failed, running
from assetlog.producer.timeouts import FlowRunTimeoutError, await_with_timeout, call_with_timeout
from assetlog.producer.upstream_tracing import Lineage, resolve_futures

if TYPE_CHECKING:
    from assetlog.producer.flows import Flow
    from assetlog.producer.publisher import Publisher

log = logging.getLogger("assetlog.producer")


class FlowRun:
    """One run of a flow: its id, what its task runs returned (`lineage`), its submitted futures."""

    def __init__(self, flow: Flow[..., Any]) -> None:
        self.id = new_event_id()
        self.flow = flow
        self.name = flow.name
        self.lineage = Lineage()
        self.cache: dict[tuple[str, str], Any] = {}  # Prefect's DEFAULT cache key includes the run id
        self._futures: list[concurrent.futures.Future[Any]] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.publishers: list[Publisher] = []
        self._last_publisher: Publisher | None = None

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix=f"assetlog-{self.name}")
            future = self._executor.submit(fn)
            self._futures.append(future)
        return future

    def use_publisher(self, publisher: Publisher) -> None:
        if publisher is self._last_publisher:
            return
        self._last_publisher = publisher
        with self._lock:
            if not any(p is publisher for p in self.publishers):
                self.publishers.append(publisher)

    # The attempt loop's interface (see `attempts`).
    @property
    def retries(self) -> int:
        return self.flow.retries

    def begin_attempt(self) -> None:
        if self.flow.on_running:
            run_hooks(self.flow.on_running, self.flow, self, running())

    def may_retry(self, error: Exception) -> bool:
        return True

    def retry_delay(self, attempt: int) -> float:
        return float(self.flow.retry_delay_seconds or 0)

    def succeeded(self, result: Any) -> Any:
        if self.flow.on_completion:
            run_hooks(self.flow.on_completion, self.flow, self, completed(result))
        return result

    def failed(self, error: Exception) -> None:
        if self.flow.on_failure:
            run_hooks(self.flow.on_failure, self.flow, self, failed(error, kind="flow"))

    def finish(self) -> None:
        """Wait for every submitted task run, then flush the events of the whole run."""
        while True:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                break
            concurrent.futures.wait(pending)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        not_recorded: LineageNotRecorded | None = None
        for publisher in self.publishers:
            try:
                result = publisher.flush()
            except LineageNotRecorded as exc:  # the flow must not look successful
                not_recorded = not_recorded or exc
                continue
            except Exception:
                log.exception("flow run %s (%s): the lineage events could not be flushed", self.id, self.name)
                continue
            if result.waiting:
                log.warning("flow run %s (%s): %d lineage events wait in the outbox %s (%s); the next "
                            "publisher on it, or `assetlog outbox flush`, sends them", self.id, self.name,
                            result.waiting, publisher.settings.outbox_dir, result.reason)
        if not_recorded is not None:
            raise not_recorded


def run_flow_sync(flow: Flow[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    parent = current_flow_run()
    flow_run = FlowRun(flow)
    tokens = enter_flow_run(flow_run)
    try:
        args, kwargs = resolve_futures(args), resolve_futures(kwargs)
        fn, timeout = flow.fn, flow.timeout_seconds
        if timeout is None:
            result = drive(attempts(flow_run), lambda: fn(*args, **kwargs))
        else:
            result = drive(attempts(flow_run), lambda: call_with_timeout(
                lambda: fn(*args, **kwargs), timeout, FlowRunTimeoutError))
    except BaseException as exc:
        _crashed(flow, flow_run, exc)
        raise
    finally:
        try:
            flow_run.finish()
        finally:
            leave_flow_run(tokens)
    if parent is not None:
        parent.lineage.hide(result)
    return result


async def run_flow_async(flow: Flow[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    parent = current_flow_run()
    flow_run = FlowRun(flow)
    tokens = enter_flow_run(flow_run)
    try:
        args, kwargs = resolve_futures(args), resolve_futures(kwargs)
        fn, timeout = flow.fn, flow.timeout_seconds
        if timeout is None:
            result = await drive_async(attempts(flow_run), lambda: fn(*args, **kwargs))
        else:
            result = await drive_async(attempts(flow_run), lambda: await_with_timeout(
                fn(*args, **kwargs), timeout, FlowRunTimeoutError))
    except BaseException as exc:
        _crashed(flow, flow_run, exc)
        raise
    finally:
        try:
            await asyncio.to_thread(flow_run.finish)
        finally:
            leave_flow_run(tokens)
    if parent is not None:
        parent.lineage.hide(result)
    return result


def _crashed(flow: Flow[..., Any], flow_run: FlowRun, error: BaseException) -> None:
    """Prefect's on_crashed hooks: the run was interrupted (KeyboardInterrupt, SystemExit...)."""
    if not isinstance(error, Exception) and flow.on_crashed:
        run_hooks(flow.on_crashed, flow, flow_run, failed(error))
