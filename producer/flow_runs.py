"""Running a flow: its attempts, timeout and hooks, then waiting for its task runs and
flushing its events; a subflow's return value hides its producers from the parent."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from assetlog.producer.attempts import attempts, drive, drive_async, run_hooks
from assetlog.producer.lineage import resolve_futures
from assetlog.producer.runtime import FlowRun, current_flow_run, enter_flow_run, leave_flow_run
from assetlog.producer.states import failed
from assetlog.producer.timeouts import FlowRunTimeoutError, await_with_timeout, call_with_timeout

if TYPE_CHECKING:
    from assetlog.producer.flows import Flow


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
