"""What one final state of a real Prefect task run means in Assetlog's terms.

Pure functions over the values Prefect's `AssetContext` holds when it emits its
asset events (Prefect objects are read through their attributes only), so the
mapping is testable without running Prefect. The rules mirror Prefect's own
`AssetContext.emit_events` (which states emit, which assets are upstream) and
Assetlog's runtime (explicit wins over inferred; an upstream carries its
properties only when it came from some task's `asset_deps`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from assetlog.producer.assets import Asset, AssetProperties
from assetlog.producer.event_builders import (
    EXPLICIT,
    FAILED,
    INFERRED,
    SUCCEEDED,
    FinishedTaskRun,
    Upstream,
    derived_event_ids,
)
from assetlog.producer.metadata import encode_metadata, merged_metadata_json

log = logging.getLogger("prefect.assetlog")

# Prefect's Asset objects are frozen and declared once per task: convert each one once.
_CONVERTED: dict[int, tuple[Any, Asset]] = {}
_MAX_CONVERTED = 10_000


def assetlog_asset(prefect_asset: Any) -> Asset:
    """The Assetlog `Asset` of a Prefect `Asset` (same key, same properties as set)."""
    entry = _CONVERTED.get(id(prefect_asset))
    if entry is not None and entry[0] is prefect_asset:
        return entry[1]
    props = prefect_asset.properties
    properties = None
    if props is not None:
        properties = AssetProperties(name=props.name, url=props.url, description=props.description,
                                     owners=list(props.owners) if props.owners is not None else None)
    asset = Asset(key=prefect_asset.key, properties=properties)
    if len(_CONVERTED) >= _MAX_CONVERTED:
        _CONVERTED.clear()
    _CONVERTED[id(prefect_asset)] = (prefect_asset, asset)  # holding it keeps its id unique
    return asset


def status_of(state: Any) -> str | None:
    """SUCCEEDED or FAILED for the final states Prefect emits asset events for, else None
    (Cached, Crashed, Cancelled, retries and every non-final state emit nothing)."""
    if state.name == "Cached":
        return None
    if state.is_failed():
        return FAILED
    if state.is_completed():
        return SUCCEEDED
    return None


def error_of(state: Any) -> tuple[str, str] | None:
    """(exception type, message) of a Failed state: the exception Prefect stored with it,
    else the state's own message."""
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # the result may be stored out of reach; the message still says what failed
        result = None
    if isinstance(result, BaseException):
        return type(result).__name__, str(result)
    return "Failed", state.message or "the task run failed"


def ordered_assets(assets: Collection[Any], declared: Sequence[Any] | None) -> list[Any]:
    """`assets` (a set, in Prefect) in the order the task declared them, the rest by key."""
    keys = {a.key for a in assets}
    ordered: list[Any] = []
    seen: set[str] = set()
    for asset in declared or ():
        if asset.key in keys and asset.key not in seen:
            seen.add(asset.key)
            ordered.append(next(a for a in assets if a.key == asset.key))
    ordered.extend(sorted((a for a in assets if a.key not in seen), key=lambda a: a.key))
    return ordered


def upstream_of(inferred: Iterable[Any], explicit: Sequence[Any],
                materialized_in_flow_run: Collection[str]) -> tuple[Upstream, ...]:
    """Inferred upstreams (by key), then explicit ones (declaration order); explicit wins.

    An inferred upstream that a task of this flow run materialized got its properties
    from that materialization; any other one came from some task's `asset_deps` and
    carries its properties, as in Assetlog's runtime.
    """
    explicit_keys = {a.key for a in explicit}
    upstream = [Upstream(assetlog_asset(a), INFERRED, a.key not in materialized_in_flow_run)
                for a in sorted(inferred, key=lambda a: a.key) if a.key not in explicit_keys]
    upstream.extend(Upstream(assetlog_asset(a), EXPLICIT, True) for a in explicit)
    return tuple(upstream)


def metadata_of(materialization_metadata: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Asset key -> merged metadata JSON text, through the runtime's own encoder.

    Prefect accepts any value; one that is not JSON loses that asset's metadata event
    (logged with the key that holds it), never the materialization.
    """
    merged: dict[str, str] = {}
    for key, values in materialization_metadata.items():
        if not values:
            continue
        try:
            merged[key] = merged_metadata_json(encode_metadata(values))
        except TypeError as exc:
            log.error("Assetlog bridge: the metadata of %s is not published: %s", key, exc)
    return merged


def finished_run(
    *,
    downstream: Collection[Any],
    inferred: Collection[Any],
    explicit: Collection[Any],
    declared_assets: Sequence[Any] | None,
    declared_deps: Sequence[Any] | None,
    materialization_metadata: Mapping[str, Mapping[str, Any]],
    by: str | None,
    status: str,
    error: tuple[str, str] | None,
    event_time: int,
    task_run_id: str,
    task_name: str,
    task_version: str | None,
    flow_run_id: str | None,
    flow_name: str | None,
    seeds: Mapping[str, str],
    materialized_in_flow_run: Collection[str] = (),
) -> FinishedTaskRun:
    """The Assetlog run for one emission of Prefect's asset events.

    `seeds` maps each materialized key to what its ids derive from: the id of the
    `prefect.asset.materialization.*` event Prefect emitted for it (see
    `seed_for`), so a follower of Prefect's events derives the very same ids.
    """
    explicit_ordered = ordered_assets(explicit, declared_deps)
    run = FinishedTaskRun(
        assets=tuple(assetlog_asset(a) for a in ordered_assets(downstream, declared_assets)),
        upstream=upstream_of(inferred, explicit_ordered, materialized_in_flow_run),
        metadata=metadata_of(materialization_metadata),
        status=status,
        error=error if status == FAILED else None,
        by=by,
        event_time=event_time,
        task_run_id=task_run_id,
        task_name=task_name,
        flow_run_id=flow_run_id,
        flow_name=flow_name,
        task_version=task_version,
    )
    full_seeds = {a.key: seeds.get(a.key) or seed_for(None, task_run_id, a.key, status) for a in run.assets}
    run.event_ids = derived_event_ids(run, full_seeds)
    return run


def seed_for(prefect_event_id: str | None, task_run_id: str, asset_key: str, status: str) -> str:
    """What an asset's event ids derive from: Prefect's event id for its materialization, or,
    when Prefect emitted none (its events are off), the task run, key and status."""
    if prefect_event_id:
        return prefect_event_id
    return f"prefect-task-run/{task_run_id}/{asset_key}/{status}"
