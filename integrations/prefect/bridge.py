"""The Prefect bridge: every asset event of a real Prefect task run, also on Assetlog's topics.

Prefect emits a task run's asset events from one place, `AssetContext.emit_events(state)`,
once per final state, while the context still knows which upstreams were inferred and
which explicit. `install()` wraps that method: the original runs first and unchanged
(Prefect's own events are exactly what they were), then the same run is published
through Assetlog's publisher and outbox. It also wraps `prefect.events.emit_event`, the
name `emit_events` looks up on every call, only to learn the ids Prefect gave its
materialization events (nothing else is touched; outside `emit_events` the wrapper just
passes the call on), so Assetlog's event ids derive from Prefect's own.

A bridge error is logged and never reaches the user's task.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any

from assetlog.integrations.prefect.mapping import error_of, finished_run, status_of
from assetlog.producer.publisher_context import current_publisher  # its atexit runs after ours

log = logging.getLogger("prefect.assetlog")

_MATERIALIZATION_EVENT = "prefect.asset.materialization."
_BRIDGE_MARK = "__assetlog_bridge__"
# Prefect events emitted inside the `emit_events` running in this context, else None.
_CAPTURED: ContextVar[list[Any] | None] = ContextVar("assetlog_prefect_captured", default=None)
_install_lock = threading.Lock()

# Keys materialized per flow run (in this process), so an inferred upstream that one of its tasks
# materialized does not also carry properties; bounded to the most recent flow runs.
_MAX_FLOW_RUNS = 256
_materialized: OrderedDict[str, set[str]] = OrderedDict()
_materialized_lock = threading.Lock()
# Publishers the bridge used, flushed (with a warning for what is left) when the process exits.
_used_publishers: weakref.WeakSet[Any] = weakref.WeakSet()


def installed() -> bool:
    # deferred: prefect, the optional `prefect` extra
    from prefect.context import AssetContext

    return getattr(AssetContext.emit_events, _BRIDGE_MARK, False)


def install() -> bool:
    """Start bridging in this process (idempotent); False if it already was."""
    # deferred: prefect, the optional `prefect` extra
    import prefect.events
    from prefect.context import AssetContext

    with _install_lock:
        if installed():
            return False
        atexit.register(flush_at_exit)  # runs first (last in, first out): it can still warn
        original_emit_events = AssetContext.emit_events
        original_emit_event = prefect.events.emit_event

        def emit_event(*args: Any, **kwargs: Any) -> Any:
            event = original_emit_event(*args, **kwargs)
            captured = _CAPTURED.get()
            if captured is not None and event is not None:
                captured.append(event)
            return event

        def emit_events(self: Any, state: Any) -> None:
            captured: list[Any] = []
            token = _CAPTURED.set(captured)
            try:
                original_emit_events(self, state)
            finally:
                _CAPTURED.reset(token)
                publish_safely(self, state, captured)

        setattr(emit_event, _BRIDGE_MARK, True)
        setattr(emit_events, _BRIDGE_MARK, True)
        emit_event.__wrapped__ = original_emit_event  # type: ignore[attr-defined]
        emit_events.__wrapped__ = original_emit_events  # type: ignore[attr-defined]
        emit_events.__doc__ = original_emit_events.__doc__
        prefect.events.emit_event = emit_event
        AssetContext.emit_events = emit_events  # type: ignore[method-assign]
        log.debug("Assetlog bridge installed: Prefect's asset events are also published to Assetlog")
        return True


def uninstall() -> None:
    """Put Prefect's own functions back (tests and benchmarks)."""
    # deferred: prefect, the optional `prefect` extra
    import prefect.events
    from prefect.context import AssetContext

    with _install_lock:
        if getattr(prefect.events.emit_event, _BRIDGE_MARK, False):
            prefect.events.emit_event = prefect.events.emit_event.__wrapped__
        if installed():
            AssetContext.emit_events = AssetContext.emit_events.__wrapped__  # type: ignore[attr-defined,method-assign]


def publish_safely(asset_context: Any, state: Any, captured: list[Any]) -> None:
    """Publish the run's events; whatever goes wrong is logged, never raised."""
    try:
        if not asset_context.downstream_assets:
            return  # not a materialization (the common case: a plain task)
        status = status_of(state)
        if status is None:
            return
        publish(asset_context, state, status, captured)
    except Exception:
        task_run_id = getattr(asset_context, "task_run_id", None)
        log.exception("Assetlog bridge: the lineage events of task run %s could not be published "
                      "(the task run itself is not affected)", task_run_id)


def publish(asset_context: Any, state: Any, status: str, captured: list[Any]) -> None:
    # deferred: prefect, the optional `prefect` extra
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx = TaskRunContext.get()
    flow_ctx = FlowRunContext.get()
    task = task_ctx.task if task_ctx is not None else None
    flow_run = getattr(flow_ctx, "flow_run", None) if flow_ctx is not None else None
    flow = getattr(flow_ctx, "flow", None) if flow_ctx is not None else None
    task_run_id = str(asset_context.task_run_id or (task_ctx.task_run.id if task_ctx is not None else ""))
    flow_run_id = str(flow_run.id) if flow_run is not None else None
    seeds = {str(event.resource.id): str(event.id) for event in captured
             if event.event.startswith(_MATERIALIZATION_EVENT)}
    run = finished_run(
        downstream=asset_context.downstream_assets,
        inferred=asset_context.upstream_assets,
        explicit=asset_context.direct_asset_dependencies,
        declared_assets=getattr(task, "assets", None),
        declared_deps=getattr(task, "asset_deps", None),
        materialization_metadata=asset_context.materialization_metadata,
        by=asset_context.materialized_by,
        status=status,
        error=error_of(state) if status == "FAILED" else None,
        event_time=_micros(state.timestamp),
        task_run_id=task_run_id,
        task_name=task.name if task is not None else "unknown",
        task_version=getattr(task, "version", None),
        flow_run_id=flow_run_id,
        flow_name=flow.name if flow is not None else None,
        seeds=seeds,
        materialized_in_flow_run=_materialized_in(flow_run_id),
    )
    _remember(flow_run_id, [asset.key for asset in run.assets])
    publisher = current_publisher()
    publisher.publish(run)
    _used_publishers.add(publisher)


def flush_at_exit() -> None:
    """Wait (up to the flush timeout) for this process's lineage events to be delivered,
    and say how many are left in the outbox: a container's outbox may not outlive it."""
    for publisher in list(_used_publishers):
        try:
            if publisher.closed or publisher.pid != os.getpid():
                continue
            result = publisher.flush()
            if result.waiting:
                log.warning("Assetlog bridge: %d lineage events wait in the outbox %s (%s); the next "
                            "publisher on it, or `assetlog outbox flush`, sends them", result.waiting,
                            publisher.settings.outbox_dir, result.reason)
        except Exception:
            log.exception("Assetlog bridge: error while flushing the lineage events at exit")


def _micros(moment: Any) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _materialized_in(flow_run_id: str | None) -> frozenset[str]:
    if flow_run_id is None:
        return frozenset()
    with _materialized_lock:
        return frozenset(_materialized.get(flow_run_id, ()))


def _remember(flow_run_id: str | None, keys: list[str]) -> None:
    if flow_run_id is None:
        return
    with _materialized_lock:
        known = _materialized.get(flow_run_id)
        if known is None:
            known = _materialized[flow_run_id] = set()
            while len(_materialized) > _MAX_FLOW_RUNS:
                _materialized.popitem(last=False)
        known.update(keys)
