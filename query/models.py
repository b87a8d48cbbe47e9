"""What the read side answers: typed, JSON-serialisable results of `LineageStore` queries.

Scripts read these through `--json` and the Python API alike, so the field
names are part of the public interface; `model_dump(mode="json")` gives plain
JSON (times as ISO-8601 text, UUIDs as strings).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["upstream", "downstream", "both"]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (what `--json` prints)."""
        return self.model_dump(mode="json")


class AssetProperties(_Result):
    """Descriptive properties, as the newest event carrying some set them (replaced as a whole)."""

    name: str | None = None
    description: str | None = None
    owners: list[str] | None = None
    url: str | None = None
    event_time: datetime = Field(description="event_time of the event that set them")
    event_id: uuid.UUID = Field(description="event_id of that event (a materialization or a dependency)")


class MaterializationRun(_Result):
    """One finished materialization of an asset (the final attempt of a task run)."""

    event_id: uuid.UUID
    event_time: datetime
    status: Literal["SUCCEEDED", "FAILED"]
    by: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    task_name: str | None = None
    task_run_id: uuid.UUID | None = None
    flow_name: str | None = None
    flow_run_id: uuid.UUID | None = None


class AssetMetadata(_Result):
    """Runtime metadata a task recorded for the asset (a JSON object)."""

    metadata: dict[str, Any]
    event_time: datetime
    event_id: uuid.UUID
    materialization_event_id: uuid.UUID = Field(description="the materialization the metadata belongs to")


class Neighbour(_Result):
    """A direct upstream or downstream of an asset, with the edge that links them."""

    key: str
    declared: Literal["inferred", "explicit"]
    first_seen: datetime
    last_seen: datetime


class AssetDetails(_Result):
    """One asset: properties, last materialization, latest metadata and direct neighbours.

    With `as_of` set, every field is what the history said at that moment.
    Neighbour lists stop at `neighbour_limit`; the counts are always complete.
    """

    key: str
    as_of: datetime | None = None
    first_seen: datetime
    last_seen: datetime
    properties: AssetProperties | None = None
    last_materialization: MaterializationRun | None = None
    metadata: AssetMetadata | None = None
    metadata_is_from_last_materialization: bool = False
    upstream_count: int = 0
    downstream_count: int = 0
    upstream: list[Neighbour] = Field(default_factory=list)
    downstream: list[Neighbour] = Field(default_factory=list)


class AssetSummary(_Result):
    """One row of an asset listing or search."""

    key: str
    name: str | None = None
    owners: list[str] | None = None
    last_status: Literal["SUCCEEDED", "FAILED"] | None = None
    last_materialized_at: datetime | None = None


class AssetPage(_Result):
    """A page of assets in key order; `next_after` continues the listing when there are more."""

    assets: list[AssetSummary]
    search: str | None = None
    owner: str | None = None
    limit: int
    next_after: str | None = None


class HistoryEntry(_Result):
    """One materialization in an asset's history, with what its task run recorded."""

    run: MaterializationRun
    upstream_keys: list[str] = Field(default_factory=list)
    properties: dict[str, Any] | None = Field(default=None, description="properties this run declared, if any")
    metadata: dict[str, Any] | None = None


class HistoryPage(_Result):
    """Materializations newest first; pass `next_cursor` as `before` for the next page."""

    key: str
    entries: list[HistoryEntry]
    limit: int
    next_cursor: str | None = None


class LineageNode(_Result):
    """An asset in a lineage answer: how far it is from the root, and its headline state.

    `upstream_depth` / `downstream_depth` are the fewest hops from the root in
    that direction (both are set only for assets on a cycle through the root;
    the root has 0).
    """

    key: str
    upstream_depth: int | None = None
    downstream_depth: int | None = None
    name: str | None = None
    last_status: Literal["SUCCEEDED", "FAILED"] | None = None
    last_materialized_at: datetime | None = None


class LineageEdge(_Result):
    """`upstream` feeds `downstream`, declared explicitly or inferred (as of the answer's moment).

    When an edge was first and last seen is in `AssetDetails.upstream`/`downstream`
    (`show`): a walk reads only what index-only scans give it.
    """

    upstream: str
    downstream: str
    declared: Literal["inferred", "explicit"]


class LineageGraph(_Result):
    """The graph around `root`, cut off at `limit` nodes (then `truncated` is true).

    Nodes come breadth first (by depth, then key); an edge is listed when the
    walk went through it and kept both of its ends.
    """

    root: str
    direction: Direction
    depth: int | None = Field(description="the hop limit asked for; null means unlimited")
    as_of: datetime | None = None
    limit: int
    truncated: bool
    nodes: list[LineageNode]
    edges: list[LineageEdge]
