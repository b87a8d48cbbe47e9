"""The flow/task run engine: run contexts, retries, what assets flow where, emission.

The only state is the current flow run and task run (`context`), in contextvars,
so threads (`.submit()`), asyncio tasks and nested calls each see their own. Which runs
are upstream of a task run is traced by `upstream_tracing`; what they pass on is decided
here: materializing runs pass on only their own assets, plain runs pass on what
they received plus their own `asset_deps`.

Task runs and flow runs, sync and async, share one attempt loop (`attempts`, a
generator the sync and async drivers step through): retries, the retry
condition, the final attempt's events, hooks; a task run's cache steps wrap it
(`_task_steps`), so `run_task_sync` and `run_task_async` differ only in how they wait. Options follow Prefect's semantics
(checked against Prefect 3.9); what cannot be given here is refused at
decoration (see docs/prefect.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from assetlog.producer.assets import Asset
from assetlog.producer.attempts import attempts, drive, drive_async, run_coroutine, run_hooks
from assetlog.producer.cache_policies import MISS, cache_hit, cache_lookup
from assetlog.producer.context import (
    current_flow_run,
    current_task_run,
    enter_flow_run,
    enter_task_run,
    leave_flow_run,
    leave_task_run,
)
from assetlog.producer.event_builders import (
    EXPLICIT,
    FAILED,
    INFERRED,
    SUCCEEDED,
    FinishedTaskRun,
    Upstream,
    new_event_id,
)
from assetlog.producer.futures import TaskFuture, TaskFutureList
from assetlog.producer.metadata import encode_metadata, merged_metadata_json
from assetlog.producer.publisher_context import current_publisher
from assetlog.producer.recording_errors import LineageNotRecorded
from assetlog.producer.states import completed, failed, running
from assetlog.producer.timeouts import (
    TaskRunTimeoutError,
    await_with_timeout,
    call_with_timeout,
)
from assetlog.producer.upstream_tracing import PassedOn, is_plain, resolve_futures

if TYPE_CHECKING:
    from assetlog.producer.flow_runs import FlowRun
    from assetlog.producer.publisher import Publisher
    from assetlog.producer.tasks import Task

log = logging.getLogger("assetlog.producer")

__all__ = ["TaskRun", "current_flow_run", "current_task_run", "enter_flow_run", "leave_flow_run"]


class TaskRun:
    """One run of a task (all its attempts): assets, upstream, metadata."""

    __slots__ = ("asset_keys", "assets", "flow_run", "id", "metadata", "passed_on", "publisher", "task", "upstream")

    def __init__(self, task: Task[..., Any], flow_run: FlowRun | None) -> None:
        self.id = new_event_id()
        self.task = task
        self.flow_run = flow_run
        self.assets: tuple[Asset, ...] = task.materialized
        self.asset_keys: frozenset[str] = task.asset_keys
        self.passed_on: tuple[tuple[Asset, bool], ...] = ()  # (asset, came from some asset_deps)
        self.upstream: tuple[Upstream, ...] = ()
        self.metadata: dict[str, dict[str, str]] = {}
        self.publisher: Publisher | None = None

    def start(self, upstream_runs: list[TaskRun | PassedOn]) -> None:
        """Decide what the run passes on and depends on, from its upstream runs (or what they pass on)."""
        if not upstream_runs:  # the common cases, from what the task computed once
            task = self.task
            if not task.asset_deps:
                self.passed_on = task.passes_on
            elif self.assets:
                self.passed_on, self.upstream = task.passes_on, task.explicit_upstream
            else:
                self.passed_on = task.passes_on_deps
            return
        received: dict[str, tuple[Asset, bool]] = {}
        for run in upstream_runs:
            for asset, from_deps in (run if isinstance(run, tuple) else run.passed_on):
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
        values = encode_metadata(metadata)
        earlier = self.metadata.get(key)
        if earlier:
            values = {**earlier, **values}
        if self.publisher is not None:
            self.publisher.check_metadata(key, values)  # too large for Kafka: fails here, naming the asset
        self.metadata[key] = values

    @property
    def name(self) -> str:
        """What hooks and retry conditions read as `task_run.name` in Prefect."""
        return self.task.task_run_name if isinstance(self.task.task_run_name, str) else self.task.name

    # The attempt loop's interface (see `attempts`).
    @property
    def retries(self) -> int:
        return self.task.retries

    def begin_attempt(self) -> None:
        self.metadata = {}  # each attempt starts afresh: only the final one's metadata counts
        if self.task.on_running:
            run_hooks(self.task.on_running, self.task, self, running())

    def may_retry(self, error: Exception) -> bool:
        """Prefect's `retry_condition_fn(task, task_run, state)`; no condition means retry."""
        condition = self.task.retry_condition_fn
        if condition is None:
            return True
        answer = condition(self.task, self, failed(error))
        if asyncio.iscoroutine(answer):
            answer = run_coroutine(answer)
        return bool(answer)

    def retry_delay(self, attempt: int) -> float:
        delay = self.task.retry_delay(attempt)
        jitter = self.task.retry_jitter_factor
        if jitter and delay > 0:  # Prefect's clamped Poisson interval
            delay = min(max(random.expovariate(1 / delay), delay * max(0.0, 1 - jitter)), delay * (1 + jitter))
        return delay

    def succeeded(self, result: Any) -> Any:
        self.finish(None)
        if self.flow_run is not None:
            self.flow_run.lineage.link(result, self)
        if self.task.on_completion:
            run_hooks(self.task.on_completion, self.task, self, completed(result))
        return result

    def failed(self, error: Exception) -> None:
        self.finish(error)
        if self.task.on_failure:
            run_hooks(self.task.on_failure, self.task, self, failed(error))

    def finish(self, error: BaseException | None) -> None:
        """Emit the run's events (materializing tasks only); never raises into user code."""
        if not self.assets or self.publisher is None:
            return
        flow_run, task = self.flow_run, self.task
        # Positional, in the fields' order: a dataclass called with twelve keywords takes about
        # three times as long to build, and one is built at the end of every materializing run.
        finished = FinishedTaskRun(
            self.assets,
            self.upstream,
            {key: merged_metadata_json(values) for key, values in self.metadata.items() if values},
            SUCCEEDED if error is None else FAILED,
            None if error is None else (type(error).__name__, str(error)),
            getattr(task, "by", None),
            time.time_ns() // 1000,  # event_time
            self.id,
            task.name,
            flow_run.id if flow_run is not None else None,
            flow_run.name if flow_run is not None else None,
            task.version,
        )
        try:
            self.publisher.publish(finished)
        except LineageNotRecorded:  # too large, or the outbox cannot take it: the run must not look successful
            self.metadata, self.upstream = {}, ()
            raise
        except Exception:
            log.exception("task run %s (%s): its lineage events could not be queued", self.id, self.task.name)
        # A submitted run's future may hold this run until the flow ends: keep only what downstream
        # runs read (`passed_on`), not the material of the events already built.
        self.metadata, self.upstream = {}, ()


def as_wait_list(wait_for: object) -> list[object]:
    """Prefect's `wait_for`: one future or result, or an iterable of them."""
    if wait_for is None:
        return []
    if isinstance(wait_for, (list, tuple, set, frozenset, TaskFutureList)):
        return list(wait_for)
    return [wait_for]


def _prepare(task: Task[..., Any], run: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any],
             wait_for: object, extra: Iterable[object]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Trace the upstream runs, wait for futures, start the run and pick its publisher."""
    flow_run = run.flow_run
    if wait_for is None and not extra and is_plain(args) and (not kwargs or is_plain(kwargs.values())):
        upstream = [] if flow_run is None else flow_run.lineage.direct_producers(
            (*args, *kwargs.values()) if kwargs else args)
    else:
        wait_list = as_wait_list(wait_for)
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


def _task_steps(task: Task[..., Any], run: TaskRun, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Generator[object, Any, Any]:
    """A task run once its inputs are ready, sync or async: the cache, the attempts, the cache's store.

    Yields as `attempts` does, so `drive` and `drive_async` step it with the body: the two
    drivers below differ only in how they wait (for futures, the body, the time between attempts).
    """
    key = None
    if task.caches:
        key, hit = cache_lookup(task, run, args, kwargs)
        if hit is not MISS:
            return cache_hit(run, hit)
    result = yield from attempts(run)
    if key is not None:
        run.flow_run.cache[key] = result  # type: ignore[union-attr]
    return result


def run_task_sync(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  wait_for: object = None, run: TaskRun | None = None,
                  extra: Iterable[object] = ()) -> Any:
    """Run a sync task in the caller's thread: its attempts, then the final attempt's events."""
    run = run or TaskRun(task, current_flow_run())
    args, kwargs = _prepare(task, run, args, kwargs, wait_for, extra)
    token = enter_task_run(run)
    try:
        if task.single_attempt:  # `_task_steps` with one attempt and no cache or hook, without a generator's cost
            try:
                result = task.fn(*args, **kwargs)
            except Exception as exc:
                run.failed(exc)
                raise
            return run.succeeded(result)
        fn, timeout = task.fn, task.timeout_seconds
        if timeout is None:
            return drive(_task_steps(task, run, args, kwargs), lambda: fn(*args, **kwargs))
        return drive(_task_steps(task, run, args, kwargs), lambda: call_with_timeout(
            lambda: fn(*args, **kwargs), timeout, TaskRunTimeoutError))
    finally:
        leave_task_run(token)


async def run_task_async(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                         wait_for: object = None, run: TaskRun | None = None,
                         extra: Iterable[object] = ()) -> Any:
    """`run_task_sync` for an async task: awaits futures, the body and the waits between attempts."""
    run = run or TaskRun(task, current_flow_run())
    pending = [v for v in (*args, *kwargs.values(), *as_wait_list(wait_for)) if isinstance(v, TaskFuture)]
    for future in pending:  # do not block the event loop on submitted runs
        await future.wait_async()
    args, kwargs = _prepare(task, run, args, kwargs, wait_for, extra)
    token = enter_task_run(run)
    try:
        fn, timeout = task.fn, task.timeout_seconds
        if timeout is None:
            return await drive_async(_task_steps(task, run, args, kwargs), lambda: fn(*args, **kwargs))
        return await drive_async(_task_steps(task, run, args, kwargs), lambda: await_with_timeout(
            fn(*args, **kwargs), timeout, TaskRunTimeoutError))
    finally:
        leave_task_run(token)


def run_generator_task(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                       wait_for: object = None) -> Iterator[Any]:
    """A generator task, as in Prefect: the run lasts while the caller iterates; each item is
    a result of the run, and its events are emitted when the generator ends (or is closed)."""
    run = TaskRun(task, current_flow_run())
    args, kwargs = _prepare(task, run, args, kwargs, wait_for, ())
    lineage = run.flow_run.lineage if run.flow_run is not None else None
    generator = task.fn(*args, **kwargs)
    result = None
    while True:
        token = enter_task_run(run)
        try:
            item = next(generator)
        except StopIteration as done:
            result = done.value
            break
        except Exception as exc:
            run.failed(exc)
            raise
        finally:
            leave_task_run(token)
        if lineage is not None:
            lineage.link(item, run)
        try:
            yield item
        except GeneratorExit:  # the caller stopped early: Prefect counts that as completed
            token = enter_task_run(run)
            try:
                generator.close()
            finally:
                leave_task_run(token)
            run.succeeded(None)
            return
    run.succeeded(result)
    return


def submit_task(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                wait_for: object = None, extra: Iterable[object] = ()) -> TaskFuture[Any]:
    """Run a task on the flow run's worker threads; outside a flow Prefect refuses, and so do we."""
    flow_run = current_flow_run()
    if flow_run is None:
        raise RuntimeError("Unable to determine task runner to use for submission. If you are submitting a "
                           "task outside of a flow, call the task directly instead (Assetlog has no `.delay`).")
    run = TaskRun(task, flow_run)
    context = contextvars.copy_context()
    if task.is_async:
        def call() -> Any:
            return context.run(asyncio.run, run_task_async(task, args, kwargs, wait_for, run, extra))
    else:
        def call() -> Any:
            return context.run(run_task_sync, task, args, kwargs, wait_for, run, extra)
    return TaskFuture(run, flow_run.submit(call))
