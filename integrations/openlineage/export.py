"""Assetlog events -> OpenLineage RunEvents (spec 2-0-2), as pure functions.

One RunEvent per materialization: COMPLETE (SUCCEEDED) or FAIL (FAILED, with
the `errorMessage` facet); job = flow name / task name; `runId` = the task run id
(so a replay sends the same ids); `parent` (and `root`) = the flow run; inputs =
its upstreams; output = its asset, with `documentation` and `ownership` facets for
the properties. What OpenLineage has no facet for travels in the custom `assetlog`
facets (run: event id, topic, partition, offset, by, run record, task version,
error; datasets: declared, properties verbatim, metadata as JSON text), which
Assetlog's receiver honours, so a round trip loses nothing.

Dependencies and metadata that belong to no materialization (edges a streaming job
recorded from RUNNING events) become one RUNNING RunEvent per downstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from assetlog import __version__
from assetlog.integrations.openlineage.ingest import ASSETLOG_FACET
from assetlog.integrations.openlineage.naming import dataset_for
from assetlog.projections.events import Position
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA

SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = f"https://pypi.org/project/assetlog/{__version__}/"
ASSETLOG_RUN_FACET_URL = "urn:assetlog:openlineage:facet:AssetlogRunFacet:1"
ASSETLOG_DATASET_FACET_URL = "urn:assetlog:openlineage:facet:AssetlogDatasetFacet:1"
DEFAULT_JOB_NAMESPACE = "assetlog"
_FACETS = "https://openlineage.io/spec/facets"


@dataclass
class Materialization:
    """A materialization and the events that belong to it, as read from the three topics."""

    materialization_id: str
    record: Mapping[str, Any] | None = None  # the materialization record, once read
    position: Position | None = None
    dependencies: dict[str, tuple[Mapping[str, Any], Position]] = field(default_factory=dict)  # by upstream
    metadata: tuple[Mapping[str, Any], Position] | None = None

    def add(self, event_type: str, record: Mapping[str, Any], position: Position) -> None:
        if event_type == MATERIALIZATION:
            self.record, self.position = record, position
        elif event_type == DEPENDENCY:
            self.dependencies.setdefault(record["upstream_key"], (record, position))
        elif event_type == METADATA:
            self.metadata = (record, position)

    @property
    def positions(self) -> list[Position]:
        found = [p for _, p in self.dependencies.values()]
        if self.position is not None:
            found.append(self.position)
        if self.metadata is not None:
            found.append(self.metadata[1])
        return found

    @property
    def complete(self) -> bool:
        """The materialization and one dependency per upstream key are in (metadata is optional)."""
        return self.record is not None and set(self.record["upstream_keys"]) <= set(self.dependencies)


def _time(value: Any) -> str:
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1_000_000, tz=UTC)
    return value.astimezone(UTC).isoformat()


def _facet(url: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": url, **fields}


def _property_facets(properties: Mapping[str, Any] | None) -> dict[str, Any]:
    facets: dict[str, Any] = {}
    if not properties:
        return facets
    if properties.get("description") is not None:
        facets["documentation"] = _facet(f"{_FACETS}/1-1-0/DocumentationDatasetFacet.json#/$defs/"
                                         "DocumentationDatasetFacet", description=properties["description"])
    if properties.get("owners"):
        facets["ownership"] = _facet(f"{_FACETS}/1-0-1/OwnershipDatasetFacet.json#/$defs/OwnershipDatasetFacet",
                                     owners=[{"name": owner} for owner in properties["owners"]])
    return facets


def _dataset(key: str, **assetlog: Any) -> dict[str, Any]:
    namespace, name = dataset_for(key)
    properties = assetlog.get("properties")
    facets = {**_property_facets(properties), ASSETLOG_FACET: _facet(ASSETLOG_DATASET_FACET_URL, **assetlog)}
    return {"namespace": namespace, "name": name, "facets": facets}


def _run_facets(record: Mapping[str, Any], position: Position | None, event_id: str | None) -> dict[str, Any]:
    run = record["run"]
    facets: dict[str, Any] = {}
    if run.get("flow_run_id"):
        job = {"namespace": DEFAULT_JOB_NAMESPACE, "name": run.get("flow_name") or "flow"}
        top = {"run": {"runId": run["flow_run_id"]}, "job": job}
        facets["parent"] = _facet(f"{_FACETS}/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet", **top, root=top)
    error = record.get("error")
    if error:
        facets["errorMessage"] = _facet(f"{_FACETS}/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
                                        message=error["message"], programmingLanguage="python")
    facets[ASSETLOG_FACET] = _facet(
        ASSETLOG_RUN_FACET_URL, event_id=event_id,
        topic=position.topic if position else None, partition=position.partition if position else None,
        offset=position.offset if position else None, by=record.get("by"), task_name=run["task_name"],
        flow_run_id=run.get("flow_run_id"), flow_name=run.get("flow_name"),
        task_version=record.get("task_version"), error=error)
    return facets


def run_event(group: Materialization) -> dict[str, Any]:
    """The RunEvent of a materialization (COMPLETE/FAIL) or of orphan dependencies (RUNNING)."""
    if group.record is not None:
        record, position = group.record, group.position
        event_type = "COMPLETE" if record["status"] == "SUCCEEDED" else "FAIL"
        downstream, event_id = record["asset_key"], record["event_id"]
        output_facets: dict[str, Any] = {"properties": record.get("properties")}
    else:  # dependencies or metadata of no materialization: a job still running
        record, position = next(iter(group.dependencies.values())) if group.dependencies else group.metadata
        event_type, downstream, event_id = "RUNNING", record.get("downstream_key") or record["asset_key"], None
        output_facets = {}
    if group.metadata is not None:
        output_facets["metadata_json"] = group.metadata[0]["metadata_json"]
    inputs = [
        _dataset(upstream, declared=dep["declared"], properties=dep.get("upstream_properties"),
                 event_id=dep["event_id"])
        for upstream, (dep, _) in _in_order(group)
    ]
    run = record["run"]
    return {
        "eventType": event_type,
        "eventTime": _time(record["event_time"]),
        "run": {"runId": run["task_run_id"], "facets": _run_facets(record, position, event_id)},
        "job": {"namespace": run.get("flow_name") or DEFAULT_JOB_NAMESPACE, "name": run["task_name"]},
        "inputs": inputs,
        "outputs": [_dataset(downstream, **output_facets)],
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
    }


def _in_order(group: Materialization) -> list[tuple[str, tuple[Mapping[str, Any], Position]]]:
    """Dependencies in the materialization's `upstream_keys` order (key order for orphans)."""
    if group.record is None:
        return sorted(group.dependencies.items())
    return [(key, group.dependencies[key]) for key in group.record["upstream_keys"] if key in group.dependencies]


def to_json(event: Mapping[str, Any]) -> bytes:
    return orjson.dumps(event)
