"""Assetlog's published events in the shape of Prefect's asset events, so Prefect's own
asset tests (ported here with their imports swapped) can read them unchanged.

`asserting_events_worker` (see conftest.py) stands in for Prefect's fixture of that
name: the test's task runs publish to an isolated world on the real broker, and
`drain()` reads everything back and converts it: a materialization record becomes
`prefect.asset.materialization.succeeded|failed` with its upstreams, the tool (`by`),
its flow run and task run as related resources and its metadata as payload; each
distinct upstream of a run becomes one `prefect.asset.referenced` event carrying the
properties its dependency events carry. Property labels come from Assetlog's own
`properties_record`, the function the runtime publishes with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from producer_support import Published, read_published

from assetlog.config import Settings
from assetlog.producer import Asset, Publisher
from assetlog.producer.event_builders import properties_record


class Resource(dict[str, str]):
    """Prefect's Resource/RelatedResource: a dict of labels with `id`, `role` and `name`."""

    @property
    def id(self) -> str:
        return self["prefect.resource.id"]

    @property
    def role(self) -> str | None:
        return self.get("prefect.resource.role")

    @property
    def name(self) -> str | None:
        return self.get("prefect.resource.name")


@dataclass
class Event:
    event: str
    resource: Resource
    related: list[Resource] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)


def resource_of(key: str, properties: dict[str, Any] | None) -> Resource:
    """Prefect's `AssetContext.asset_as_resource` labels, from an Assetlog properties record."""
    labels = Resource({"prefect.resource.id": key})
    props = properties or {}
    for name, label in (("name", "prefect.resource.name"), ("description", "prefect.asset.description"),
                        ("url", "prefect.asset.url")):
        if props.get(name) is not None:
            labels[label] = props[name]
    if props.get("owners") is not None:
        labels["prefect.asset.owners"] = json.dumps(props["owners"])
    return labels


class AssetContext:
    """The two format helpers Prefect's tests call, over Assetlog's properties record."""

    @staticmethod
    def asset_as_resource(asset: Asset) -> Resource:
        return resource_of(asset.key, properties_record(asset))

    @staticmethod
    def asset_as_related(asset: Asset) -> Resource:
        return Resource({"prefect.resource.id": asset.key, "prefect.resource.role": "asset"})


def prefect_events(published: list[Published]) -> list[Event]:
    """Referenced events, then materializations, run by run in the order the runs ended."""
    records = [(p.event_type, p.record) for p in published]
    dependencies: dict[str, list[dict[str, Any]]] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for kind, record in records:
        if kind == "dependency":
            dependencies.setdefault(record["materialization_event_id"], []).append(record)
        elif kind == "metadata":
            metadata[record["materialization_event_id"]] = json.loads(record["metadata_json"])
    materializations = sorted((r for k, r in records if k == "materialization"), key=lambda r: r["event_time"])
    events: list[Event] = []
    referenced: set[tuple[str, str]] = set()
    for record in materializations:
        run = record["run"]
        # Prefect's emit_event relates every event to the flow run and task run it happens in.
        context = [Resource({"prefect.resource.id": f"prefect.task-run.{run['task_run_id']}",
                             "prefect.resource.role": "task-run", "prefect.resource.name": run["task_name"]})]
        if run["flow_run_id"] is not None:
            context.append(Resource({"prefect.resource.id": f"prefect.flow-run.{run['flow_run_id']}",
                                     "prefect.resource.role": "flow-run", "prefect.resource.name": run["flow_name"]}))
        related = []
        for dependency in dependencies.get(record["event_id"], []):
            upstream = dependency["upstream_key"]
            related.append(Resource({"prefect.resource.id": upstream, "prefect.resource.role": "asset"}))
            if (run["task_run_id"], upstream) not in referenced:
                referenced.add((run["task_run_id"], upstream))
                events.append(Event("prefect.asset.referenced",
                                    resource_of(upstream, dependency["upstream_properties"]), list(context)))
        if record["by"] is not None:
            related.append(Resource({"prefect.resource.id": record["by"],
                                     "prefect.resource.role": "asset-materialized-by"}))
        events.append(Event(f"prefect.asset.materialization.{record['status'].lower()}",
                            resource_of(record["asset_key"], record["properties"]), related + context,
                            metadata.get(record["event_id"], {})))
    return events


class CapturedEvents:
    def __init__(self) -> None:
        self.events: list[Event] = []


class EventsWorker:
    """Prefect's asserting events worker, reading Assetlog's events back from the broker."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self._client = CapturedEvents()

    def drain(self) -> None:
        flushed = self.publisher.flush()
        assert flushed.complete, f"events not acknowledged: {flushed}"
        self._client.events = prefect_events(read_published(self.settings))
