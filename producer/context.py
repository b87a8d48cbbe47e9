"""The current flow run and task run: the one piece of state the producer's modules share.

Kept in `contextvars`, so threads (`.submit()`), asyncio tasks and nested calls
each see their own. This module imports nothing else from `producer/` at run
time (as `prefect/context.py` in Prefect): the engine (`runtime`), the API
(`assets`, `metadata`, `tasks`, `flows`) and the bookkeeping (`upstream_tracing`,
`futures`) read the run context from here, which keeps the import graph a tree.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assetlog.producer.flow_runs import FlowRun
    from assetlog.producer.runtime import TaskRun

_FLOW_RUN: ContextVar[FlowRun | None] = ContextVar("assetlog_flow_run", default=None)
_TASK_RUN: ContextVar[TaskRun | None] = ContextVar("assetlog_task_run", default=None)



def current_flow_run() -> FlowRun | None:
    """The flow run this code runs in, or None."""
    return _FLOW_RUN.get()


def current_task_run() -> TaskRun | None:
    """The task run this code runs in, or None."""
    return _TASK_RUN.get()


def enter_flow_run(flow_run: FlowRun) -> tuple[Token[Any], Token[Any]]:
    """Make `flow_run` the current one (and no task run current) until `leave_flow_run`."""
    return _FLOW_RUN.set(flow_run), _TASK_RUN.set(None)


def leave_flow_run(tokens: tuple[Token[Any], Token[Any]]) -> None:
    flow_token, task_token = tokens
    _TASK_RUN.reset(task_token)
    _FLOW_RUN.reset(flow_token)


# The task run's own set/reset, bound once: they run around every task body.
enter_task_run = _TASK_RUN.set
leave_task_run = _TASK_RUN.reset


def add_metadata_for_key(key: str, metadata: dict[str, Any], *, message_outside: str) -> None:
    """Add to the running task run; `message_outside` is Prefect's text for a call outside one."""
    run = _TASK_RUN.get()
    if run is None:
        raise RuntimeError(message_outside)
    run.add_metadata(key, metadata)
