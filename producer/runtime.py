"""The flow/task run engine: run contexts, retries, what assets flow where, emission.

The only state is the current flow run and task run, in contextvars, so threads
(`.submit()`), asyncio tasks and nested calls each see their own. Which runs
are upstream of a task run is traced by `lineage`; what they pass on is decided
here: materializing runs pass on only their own assets, plain runs pass on what
they received plus their own `asset_deps`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from assetlog.producer.assets import Asset
from assetlog.producer.events import (
    EXPLICIT,
    FAILED,
    INFERRED,
    SUCCEEDED,
    FinishedTaskRun,
    Upstream,
    new_event_id,
)
from assetlog.producer.futures import TaskFuture
from assetlog.producer.lineage import Lineage, is_plain, resolve_futures
from assetlog.producer.metadata import encode_metadata, merged_metadata_json
from assetlog.producer.publishing import current_publisher
from assetlog.producer.recording_errors import LineageNotRecorded

if TYPE_CHECKING:
    from assetlog.producer.publisher import Publisher
    from assetlog.producer.tasks import Task

log = logging.getLogger("assetlog.producer")

_FLOW_RUN: ContextVar[FlowRun | None] = ContextVar("assetlog_flow_run", default=None)
_TASK_RUN: ContextVar[TaskRun | None] = ContextVar("assetlog_task_run", default=None)


def current_flow_run() -> FlowRun | None:
    return _FLOW_RUN.get()


def current_task_run() -> TaskRun | None:
    return _TASK_RUN.get()


class FlowRun:
    """One run of a flow: its id, what its task runs returned (`lineage`), its submitted futures."""

    def __init__(self, name: str) -> None:
        self.id = new_event_id()
        self.name = name
        self.lineage = Lineage()
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


class TaskRun:
    """One run of a task (all its attempts): assets, upstream, metadata."""

    __slots__ = ("asset_keys", "assets", "flow_run", "id", "metadata", "passed_on", "publisher", "task", "upstream")

    def __init__(self, task: Task[..., Any], flow_run: FlowRun | None) -> None:
        self.id = new_event_id()
        self.task = task
        self.flow_run = flow_run
        self.assets: tuple[Asset, ...] = task.assets
        self.asset_keys: frozenset[str] = task.asset_keys
        self.passed_on: tuple[tuple[Asset, bool], ...] = ()  # (asset, came from some asset_deps)
        self.upstream: tuple[Upstream, ...] = ()
        self.metadata: dict[str, dict[str, str]] = {}
        self.publisher: Publisher | None = None

    def start(self, upstream_runs: list[TaskRun]) -> None:
        if not upstream_runs and not self.task.asset_deps:  # the common case, kept cheap
            self.passed_on = tuple((asset, False) for asset in self.assets)
            return
        received: dict[str, tuple[Asset, bool]] = {}
        for run in upstream_runs:
            for asset, from_deps in run.passed_on:
                known = received.get(asset.key)
                if known is None or (from_deps and not known[1]):
                    received[asset.key] = (asset, from_deps)
        if self.assets:
            self.passed_on = tuple((asset, False) for asset in self.assets)
            upstream = {key: Upstream(asset, INFERRED, from_deps) for key, (asset, from_deps) in received.items()}
            for dep in self.task.asset_deps:  # explicit wins over inferred
                upstream[dep.key] = Upstream(dep, EXPLICIT, True)
            self.upstream = tuple(upstream.values())
        else:
            for dep in self.task.asset_deps:
                received[dep.key] = (dep, True)
            self.passed_on = tuple(received.values())

    def add_metadata(self, key: str, metadata: object) -> None:
        if key not in self.asset_keys:
            raise ValueError("Can only add metadata to assets that are arguments to @materialize")
        values = {**self.metadata.get(key, {}), **encode_metadata(metadata)}
        if self.publisher is not None:
            self.publisher.check_metadata(key, values)  # too large for Kafka: fails here, naming the asset
        self.metadata[key] = values

    def finish(self, error: BaseException | None) -> None:
        """Emit the run's events (materializing tasks only); never raises into user code."""
        if not self.assets or self.publisher is None:
            return
        flow_run = self.flow_run
        finished = FinishedTaskRun(
            assets=self.assets,
            upstream=self.upstream,
            metadata={key: merged_metadata_json(values) for key, values in self.metadata.items() if values},
            status=FAILED if error is not None else SUCCEEDED,
            error=(type(error).__name__, str(error)) if error is not None else None,
            by=getattr(self.task, "by", None),
            event_time=time.time_ns() // 1000,
            task_run_id=self.id,
            task_name=self.task.name,
            flow_run_id=flow_run.id if flow_run is not None else None,
            flow_name=flow_run.name if flow_run is not None else None,
            task_version=self.task.version,
        )
        try:
            self.publisher.publish(finished)
        except LineageNotRecorded:  # too large, or the outbox cannot take it: the run must not look successful
            self.metadata, self.upstream = {}, ()
            raise
        except Exception:
            log.exception("task run %s (%s): its lineage events could not be queued", self.id, self.task.name)
        # The flow run holds this run (the producer of its result) until the flow ends: keep only what
        # downstream runs read (`passed_on`), not the material of the events already built.
        self.metadata, self.upstream = {}, ()


def _prepare(task: Task[..., Any], run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any],
             wait_for: Iterable[object] | None, extra: Iterable[object]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Trace the upstream runs, wait for futures, start the run and pick its publisher."""
    flow_run = run.flow_run
    if wait_for is None and not extra and is_plain(args) and is_plain(kwargs.values()):
        upstream = [] if flow_run is None else flow_run.lineage.direct_producers((*args, *kwargs.values()))
    else:
        wait_list = list(wait_for or ())
        upstream = [] if flow_run is None else flow_run.lineage.upstream_runs(
            (args, kwargs, wait_list, list(extra)), flow_run)
        resolve_futures(wait_list)  # waits; a failed one raises UpstreamTaskError
        args, kwargs = resolve_futures(args), resolve_futures(kwargs)
    run.start(upstream)
    if run.assets:
        run.publisher = current_publisher()  # a configuration error fails before the body runs
        if flow_run is not None:
            flow_run.use_publisher(run.publisher)
    return args, kwargs


def run_task_sync(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  wait_for: Iterable[object] | None = None, run: TaskRun | None = None,
                  extra: Iterable[object] = ()) -> Any:
    """Run a sync task in the caller's thread: retries, then the final attempt's events."""
    run = run or TaskRun(task, current_flow_run())
    args, kwargs = _prepare(task, run, args, kwargs, wait_for, extra)
    token = _TASK_RUN.set(run)
    try:
        attempt = 0
        while True:
            run.metadata = {}  # each attempt starts afresh: only the final one's metadata counts
            try:
                result = task.fn(*args, **kwargs)
            except Exception as exc:
                if attempt < task.retries:
                    time.sleep(task.retry_delay(attempt))
                    attempt += 1
                    continue
                run.finish(exc)
                raise
            run.finish(None)
            if run.flow_run is not None:
                run.flow_run.lineage.link(result, run)
            return result
    finally:
        _TASK_RUN.reset(token)


async def run_task_async(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                         wait_for: Iterable[object] | None = None, run: TaskRun | None = None,
                         extra: Iterable[object] = ()) -> Any:
    """The async twin of `run_task_sync`: awaits the body and sleeps without blocking the loop."""
    run = run or TaskRun(task, current_flow_run())
    pending = [v for v in (*args, *kwargs.values(), *(wait_for or ())) if isinstance(v, TaskFuture)]
    for future in pending:  # do not block the event loop on submitted runs
        await future.wait_async()
    args, kwargs = _prepare(task, run, args, kwargs, wait_for, extra)
    token = _TASK_RUN.set(run)
    try:
        attempt = 0
        while True:
            run.metadata = {}  # each attempt starts afresh: only the final one's metadata counts
            try:
                result = await task.fn(*args, **kwargs)
            except Exception as exc:
                if attempt < task.retries:
                    await asyncio.sleep(task.retry_delay(attempt))
                    attempt += 1
                    continue
                run.finish(exc)
                raise
            run.finish(None)
            if run.flow_run is not None:
                run.flow_run.lineage.link(result, run)
            return result
    finally:
        _TASK_RUN.reset(token)


def submit_task(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                wait_for: Iterable[object] | None = None, extra: Iterable[object] = ()) -> TaskFuture[Any]:
    """Run a task on a worker thread (the flow run's pool, or a thread of its own outside a flow)."""
    flow_run = current_flow_run()
    run = TaskRun(task, flow_run)
    context = contextvars.copy_context()
    if task.is_async:
        def call() -> Any:
            return context.run(asyncio.run, run_task_async(task, args, kwargs, wait_for, run, extra))
    else:
        def call() -> Any:
            return context.run(run_task_sync, task, args, kwargs, wait_for, run, extra)
    if flow_run is not None:
        return TaskFuture(run, flow_run.submit(call))
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="assetlog-task")
    future = executor.submit(call)
    executor.shutdown(wait=False)
    return TaskFuture(run, future)


def run_flow_sync(fn: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    flow_run = FlowRun(name)
    flow_token, task_token = _FLOW_RUN.set(flow_run), _TASK_RUN.set(None)
    try:
        return fn(*resolve_futures(args), **resolve_futures(kwargs))
    finally:
        try:
            flow_run.finish()
        finally:
            _TASK_RUN.reset(task_token)
            _FLOW_RUN.reset(flow_token)


async def run_flow_async(fn: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    flow_run = FlowRun(name)
    flow_token, task_token = _FLOW_RUN.set(flow_run), _TASK_RUN.set(None)
    try:
        return await fn(*resolve_futures(args), **resolve_futures(kwargs))
    finally:
        try:
            await asyncio.to_thread(flow_run.finish)
        finally:
            _TASK_RUN.reset(task_token)
            _FLOW_RUN.reset(flow_token)
