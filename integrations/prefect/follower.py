"""Follow a Prefect server's stored asset events and publish them as Assetlog's.

For deployments whose workers cannot get the bridge. It reads the server's events API
(`POST /api/events/filter`, then its `next_page` links) from a checkpoint onwards, in
`occurred` order, and polls it again; each `prefect.asset.materialization.*` event becomes
one Assetlog run through the bridge's own mapping, with the ids the bridge derives
(`derived_event_id` of Prefect's event id), so running both never counts an event twice.

What Prefect's events cannot say: whether an upstream was inferred or explicit (all are
published as INFERRED), the error of a failed run, the task's version. The properties of
an upstream come from the `prefect.asset.referenced` event Prefect emits just before the
materialization in the same task run.

Events are read up to a moment `settle` seconds ago: the server stores an event a moment
after it happened, and an event stored later than that behind the checkpoint is not seen.
The checkpoint (a JSON file) holds the `occurred` time of the newest event published and
delivered, and the ids of the events at that instant: a restart re-reads from that instant
and skips those ids, so nothing is lost and nothing is published twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from assetlog.errors import AssetlogError
from assetlog.integrations.prefect.mapping import finished_run
from assetlog.producer.event_builders import FAILED, SUCCEEDED, FinishedTaskRun

log = logging.getLogger("assetlog.integrations.prefect")

MATERIALIZATION_PREFIX = "prefect.asset.materialization."
REFERENCED = "prefect.asset.referenced"
PAGE_SIZE = 50  # the most `/events/filter` returns per page
BATCH_EVENTS = 500  # events published between two flushes and checkpoints
MAX_REFERENCED_RUNS = 10_000


class FollowerGap(AssetlogError):
    """The checkpoint is older than what the server still keeps: events may be gone."""


@dataclass
class Checkpoint:
    """Where the follower is: the newest delivered `occurred`, and the ids delivered at it."""

    occurred: str | None = None  # ISO 8601, as the server gave it
    ids_at_occurred: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(occurred=data["occurred"], ids_at_occurred=list(data["ids_at_occurred"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AssetlogError(f"checkpoint {path}: cannot read it ({exc}); fix or remove it") from exc

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps({"occurred": self.occurred, "ids_at_occurred": self.ids_at_occurred}))
        os.replace(temporary, path)  # atomic: a crash leaves the old checkpoint or the new one

    def advance(self, events: list[Mapping[str, Any]]) -> None:
        for event in events:
            if event["occurred"] != self.occurred:
                self.occurred, self.ids_at_occurred = event["occurred"], []
            self.ids_at_occurred.append(event["id"])


@dataclass(frozen=True)
class _Asset:
    """A Prefect asset as its event resource describes it (what `mapping` reads)."""

    key: str
    properties: Any


@dataclass(frozen=True)
class _Properties:
    name: str | None = None
    description: str | None = None
    url: str | None = None
    owners: list[str] | None = None

    def __hash__(self) -> int:
        return hash((self.name, self.description, self.url, tuple(self.owners or ())))


def asset_from_resource(resource: Mapping[str, str]) -> _Asset:
    """The asset of an event resource; properties only when Prefect wrote some labels."""
    owners = resource.get("prefect.asset.owners")
    labels = {"name": resource.get("prefect.resource.name"), "description": resource.get("prefect.asset.description"),
              "url": resource.get("prefect.asset.url"), "owners": json.loads(owners) if owners else None}
    properties = _Properties(**labels) if any(v is not None for v in labels.values()) else None
    return _Asset(resource["prefect.resource.id"], properties)


def _related(event: Mapping[str, Any], role: str) -> list[Mapping[str, str]]:
    return [r for r in event.get("related", []) if r.get("prefect.resource.role") == role]


def _run_id(event: Mapping[str, Any], role: str) -> tuple[str | None, str | None]:
    found = _related(event, role)
    if not found:
        return None, None
    return found[0]["prefect.resource.id"].rsplit(".", 1)[-1], found[0].get("prefect.resource.name")


def _micros(occurred: str) -> int:
    moment = datetime.fromisoformat(occurred.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def run_from_event(event: Mapping[str, Any],
                   referenced: Mapping[str, Mapping[str, _Asset]]) -> FinishedTaskRun | None:
    """The Assetlog run of one materialization event (None for any other event).

    `referenced` holds, per task run id, the assets of its `prefect.asset.referenced`
    events: they carry the upstreams' properties.
    """
    name = event["event"]
    if not name.startswith(MATERIALIZATION_PREFIX):
        return None
    status = {"succeeded": SUCCEEDED, "failed": FAILED}.get(name[len(MATERIALIZATION_PREFIX):])
    if status is None:
        return None
    task_run_id, task_run_name = _run_id(event, "task-run")
    flow_run_id, _ = _run_id(event, "flow-run")
    _, flow_name = _run_id(event, "flow")
    upstream_seen = referenced.get(task_run_id or "", {})
    upstream = [upstream_seen.get(r["prefect.resource.id"]) or _Asset(r["prefect.resource.id"], None)
                for r in _related(event, "asset")]
    by = _related(event, "asset-materialized-by")
    asset = asset_from_resource(event["resource"])
    return finished_run(
        downstream=[asset], inferred=upstream, explicit=[], declared_assets=None, declared_deps=None,
        materialization_metadata={asset.key: event.get("payload") or {}},
        by=by[0]["prefect.resource.id"] if by else None, status=status, error=None,
        event_time=_micros(event["occurred"]), task_run_id=task_run_id or event["id"],
        # Prefect names a task run "<task name>-<3 characters>"; the events carry no task name.
        task_name=(task_run_name or "unknown").rsplit("-", 1)[0], task_version=None,
        flow_run_id=flow_run_id, flow_name=flow_name, seeds={asset.key: event["id"]})


class PrefectEvents:
    """The server's stored events, read page by page (`/events/filter`, then `next_page`)."""

    def __init__(self, api_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.headers = {"content-type": "application/json"}
        if api_key:  # Prefect Cloud
            self.headers["authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def _request(self, url: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                         headers=self.headers,
                                         method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AssetlogError(f"Prefect API {self.api_url}: {exc}") from exc

    def since(self, occurred: str | None, until: datetime) -> Iterator[dict[str, Any]]:
        """Asset events from `occurred` (inclusive) to `until`, oldest first."""
        since = occurred or (until - timedelta(days=3650)).isoformat()
        body = {"filter": {"occurred": {"since": since, "until": until.isoformat()},
                           "event": {"prefix": ["prefect.asset."]}, "order": "ASC"}, "limit": PAGE_SIZE}
        page = self._request(f"{self.api_url}/events/filter", body)
        while True:
            yield from page.get("events", [])
            next_page = page.get("next_page")
            if not next_page:
                return
            page = self._request(next_page, None)


def check_retention(checkpoint: Checkpoint, retention: timedelta, now: datetime) -> None:
    """A checkpoint older than the server's retention means events may have been deleted."""
    if checkpoint.occurred is None:
        return
    last = datetime.fromisoformat(checkpoint.occurred.replace("Z", "+00:00"))
    if now - last > retention:
        raise FollowerGap(
            f"the checkpoint ({checkpoint.occurred}) is older than the Prefect server's event retention "
            f"({retention}): events after it may be gone. Re-run with --accept-gap to go on from what is left")


@dataclass
class Follower:
    """Reads from the checkpoint, publishes, flushes, then moves the checkpoint."""

    events: PrefectEvents
    publisher: Any  # assetlog.producer.Publisher
    checkpoint_path: Path
    referenced: dict[str, dict[str, _Asset]] = field(default_factory=dict)

    def step(self, until: datetime) -> dict[str, int]:
        """One pass up to `until`: returns how many events were read and runs published."""
        checkpoint = Checkpoint.load(self.checkpoint_path)
        skip = set(checkpoint.ids_at_occurred)
        read = published = 0
        batch: list[dict[str, Any]] = []
        for event in self.events.since(checkpoint.occurred, until):
            if event["id"] in skip:
                continue
            read += 1
            batch.append(event)
            if event["event"] == REFERENCED:
                self._remember_reference(event)
                continue
            run = run_from_event(event, self.referenced)
            if run is not None:
                self.publisher.publish(run)
                published += 1
            if len(batch) >= BATCH_EVENTS:
                self._commit(checkpoint, batch)
        self._commit(checkpoint, batch)
        return {"read": read, "published": published}

    def _remember_reference(self, event: Mapping[str, Any]) -> None:
        task_run_id, _ = _run_id(event, "task-run")
        if task_run_id is None:
            return
        if len(self.referenced) >= MAX_REFERENCED_RUNS:
            self.referenced.clear()
        asset = asset_from_resource(event["resource"])
        self.referenced.setdefault(task_run_id, {})[asset.key] = asset

    def _commit(self, checkpoint: Checkpoint, batch: list[dict[str, Any]]) -> None:
        """Move the checkpoint only past events Kafka acknowledged (or the outbox holds)."""
        if not batch:
            return
        result = self.publisher.flush()
        if result.waiting and result.reason and "outbox cannot be written" in result.reason:
            raise AssetlogError(f"cannot publish: {result.reason}")
        checkpoint.advance(batch)
        checkpoint.save(self.checkpoint_path)
        batch.clear()

    def follow(self, interval: float, settle: timedelta, stop: Any) -> None:
        """Poll until `stop()`; an unreachable API or Kafka is retried at the next poll."""
        while not stop():
            try:
                self.step(datetime.now(UTC) - settle)
            except AssetlogError as exc:
                log.warning("assetlog ingest prefect: %s; retrying in %.0f s", exc, interval)
            time.sleep(interval)
