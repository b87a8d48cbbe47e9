"""An OpenLineage RunEvent (a JSON dict) -> Assetlog events, built with the producer's `events_for`.

Pure: the run's accumulated state comes in and goes out as a value (`RunState`;
`runs.RunStore` keeps it), so the whole mapping is testable with plain dicts.

- COMPLETE -> one SUCCEEDED materialization per output the run has named so far
  (over all its events), FAIL -> FAILED, ABORT -> FAILED with error type
  `OpenLineageAbort` (FAIL's is `OpenLineageFail`); the `errorMessage` run facet
  gives the message. Each output depends (EXPLICIT) on every input the run named.
- START / RUNNING / OTHER record what a streaming job that never completes has:
  a dependency event for each (input, output) pair the run has not recorded yet,
  and a metadata event for an output seen for the first time. No materialization:
  none has happened yet (the dependencies name the id their materialization would have).
- Facets: `documentation` -> description, `ownership` -> owners (as properties,
  replacing the stored ones, as Assetlog properties always do); every dataset and
  output facet (`schema`, `outputStatistics`, `columnLineage`, `dataQuality*`, custom
  ones) is kept as JSON in the output's metadata, plus an `openlineage` entry with
  the dataset's name, the job, the run facets and the inputs' facets.
- Flow run: the `parent` facet's root run (else the parent run) is the flow run.
- Event ids: derived from the idempotency key (run id, event type, event time,
  hash of the event's content), so a resent event writes the same ids and the
  consumers' dedupe on event id keeps history free of duplicates.
- An event carrying the `assetlog` run facet (written by Assetlog's exporter) is
  taken as it is, not accumulated, and its facets restore what OpenLineage has no
  field for (run record, by, declared, properties, metadata), so a round trip loses nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from assetlog.config import Topics
from assetlog.integrations.openlineage.naming import NamingError, asset_key_for
from assetlog.integrations.openlineage.spec import InvalidOpenLineage
from assetlog.producer.assets import MAX_DESCRIPTION_LENGTH, Asset, AssetProperties
from assetlog.producer.event_builders import (
    EXPLICIT,
    FAILED,
    SUCCEEDED,
    FinishedTaskRun,
    OutgoingEvent,
    ProducerIdentity,
    Upstream,
    events_for,
)
from assetlog.schemas import MATERIALIZATION

TERMINAL = {"COMPLETE": SUCCEEDED, "FAIL": FAILED, "ABORT": FAILED}
ERROR_TYPES = {"FAIL": "OpenLineageFail", "ABORT": "OpenLineageAbort"}
ASSETLOG_FACET = "assetlog"
ALIAS_TYPE = "ASSETLOG"  # a `symlinks` identifier of this type names the asset (see docs/openlineage.md)


@dataclass(frozen=True)
class Dataset:
    """One dataset of a run as accumulated so far: its name, and its facets merged (later wins)."""

    namespace: str
    name: str
    facets: Mapping[str, Any] = field(default_factory=dict)  # dataset facets and input/output facets

    def merged(self, other: Dataset) -> Dataset:
        return replace(self, facets={**self.facets, **other.facets})


@dataclass(frozen=True)
class RunState:
    """What one run's events named so far; stored between events (`runs.RunStore`)."""

    inputs: Mapping[str, Dataset] = field(default_factory=dict)
    outputs: Mapping[str, Dataset] = field(default_factory=dict)
    edges: frozenset[tuple[str, str]] = frozenset()  # (upstream, downstream) already recorded

    def to_json(self) -> bytes:
        return orjson.dumps({
            "inputs": {k: [d.namespace, d.name, d.facets] for k, d in self.inputs.items()},
            "outputs": {k: [d.namespace, d.name, d.facets] for k, d in self.outputs.items()},
            "edges": sorted(self.edges),
        })

    @classmethod
    def from_json(cls, data: bytes) -> RunState:
        raw = orjson.loads(data)
        return cls(
            inputs={k: Dataset(*v) for k, v in raw["inputs"].items()},
            outputs={k: Dataset(*v) for k, v in raw["outputs"].items()},
            edges=frozenset((up, down) for up, down in raw["edges"]),
        )


@dataclass(frozen=True)
class Translation:
    """The Assetlog events of one OpenLineage event and the run's state after it."""

    run_id: str
    idempotency_key: str
    events: list[OutgoingEvent]
    state: RunState
    terminal: bool


def idempotency_key(event: Mapping[str, Any]) -> str:
    """sha256 over (run id, event type, event time, sha256 of the event's canonical JSON)."""
    content = hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()
    run = event.get("run") or {}
    parts = (str(run.get("runId")), str(event.get("eventType")), str(event.get("eventTime")), content)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def id_sequence(key: str, first: str | None = None) -> Callable[[], str]:
    """Deterministic event ids for one event: UUIDs (version 8, RFC 9562) from `key` and a counter."""
    counter = iter(range(1_000_000_000))

    def new_id() -> str:
        index = next(counter)
        if index == 0 and first is not None:
            return first
        h = hashlib.sha256(f"{key}:{index}".encode()).hexdigest()
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"

    return new_id


def event_time_micros(text: Any) -> int:
    if not isinstance(text, str):
        raise InvalidOpenLineage(f"eventTime must be an ISO 8601 date-time string, got {text!r:.80}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidOpenLineage(f"eventTime {text[:80]!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the spec asks for an offset; a missing one means UTC
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def uuid_text(value: Any, where: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidOpenLineage(f"{where} must be a UUID, got {str(value)[:80]!r}") from None


def dataset_of(raw: Mapping[str, Any], extra: str) -> tuple[str, Dataset]:
    """(asset key, Dataset) of an input or output; a `symlinks` identifier of type ASSETLOG names it."""
    facets = {**(raw.get("facets") or {}), **(raw.get(extra) or {})}
    namespace, name = raw["namespace"], raw["name"]
    for identifier in (facets.get("symlinks") or {}).get("identifiers") or ():
        if isinstance(identifier, dict) and str(identifier.get("type", "")).upper() == ALIAS_TYPE:
            namespace, name = identifier.get("namespace", namespace), identifier.get("name", name)
            break
    try:
        key = asset_key_for(namespace, name)
    except NamingError as exc:
        raise InvalidOpenLineage(str(exc)) from None
    return key, Dataset(raw["namespace"], raw["name"], facets)


def properties_of(dataset: Dataset) -> AssetProperties | None:
    """Properties from the assetlog facet verbatim, else from documentation and ownership; None if neither."""
    mine = dataset.facets.get(ASSETLOG_FACET)
    if isinstance(mine, dict) and "properties" in mine:
        given = mine["properties"]
        return AssetProperties(**given) if given is not None else None
    documentation = (dataset.facets.get("documentation") or {}).get("description")
    owners = [o["name"] for o in (dataset.facets.get("ownership") or {}).get("owners") or () if "name" in o]
    if documentation is None and not owners:
        return None
    if documentation is not None and len(documentation) > MAX_DESCRIPTION_LENGTH:
        documentation = documentation[: MAX_DESCRIPTION_LENGTH - 1] + "\u2026"
    return AssetProperties(description=documentation, owners=owners or None)


def metadata_of(key: str, dataset: Dataset, event: Mapping[str, Any], inputs: Mapping[str, Dataset],
                exported: bool) -> str | None:
    """The output's metadata JSON: its facets, plus where it came from under `openlineage`; for an
    event from Assetlog's exporter, the metadata it carries (None if the materialization had none)."""
    if exported:
        mine = dataset.facets.get(ASSETLOG_FACET)
        text = mine.get("metadata_json") if isinstance(mine, dict) else None
        if text is not None and not isinstance(orjson.loads(text), dict):
            raise InvalidOpenLineage("the assetlog facet's metadata_json must be a JSON object")
        return text
    run, job = event.get("run") or {}, event.get("job") or {}
    metadata = {name: facet for name, facet in dataset.facets.items() if name != ASSETLOG_FACET}
    metadata["openlineage"] = {
        "namespace": dataset.namespace, "name": dataset.name, "event_type": event.get("eventType"),
        "run_id": run.get("runId"), "job": {"namespace": job.get("namespace"), "name": job.get("name")},
        "run_facets": run.get("facets") or {}, "job_facets": job.get("facets") or {},
        "input_facets": {k: d.facets for k, d in sorted(inputs.items()) if d.facets and k != key},
    }
    return orjson.dumps(metadata).decode()


def _flow_of(run: Mapping[str, Any]) -> tuple[str | None, str | None]:
    parent = ((run.get("facets") or {}).get("parent")) or {}
    top = parent.get("root") or parent
    if not isinstance(top, dict) or not isinstance(top.get("run"), dict):
        return None, None
    run_id = top["run"].get("runId")
    flow_run_id = uuid_text(run_id, "the parent run's runId") if run_id is not None else None
    return flow_run_id, ((top.get("job") or {}).get("name"))


def translate(event: Mapping[str, Any], state: RunState, topics: Topics,
              identity: ProducerIdentity) -> Translation:
    """Assetlog events for one validated RunEvent, given its run's state so far.

    Facets whose schema is not vendored were not checked: a value of an unexpected
    shape in one this mapping reads becomes `InvalidOpenLineage`, never a crash.
    """
    try:
        return _translate(event, state, topics, identity)
    except InvalidOpenLineage:
        raise
    except (TypeError, KeyError, AttributeError, ValueError) as exc:  # pydantic's ValidationError included
        detail = " ".join(str(exc).split())[:300]
        raise InvalidOpenLineage(f"cannot read the event's facets ({type(exc).__name__}: {detail})") from None


def _translate(event: Mapping[str, Any], state: RunState, topics: Topics,
               identity: ProducerIdentity) -> Translation:
    run, job = event["run"], event["job"]
    run_id = uuid_text(run["runId"], "run.runId")
    event_type = event.get("eventType") or "OTHER"
    time = event_time_micros(event["eventTime"])
    key = idempotency_key(event)
    run_facets = run.get("facets") or {}
    mine = run_facets.get(ASSETLOG_FACET) if isinstance(run_facets.get(ASSETLOG_FACET), dict) else None
    inputs = dict(dataset_of(d, "inputFacets") for d in event.get("inputs") or ())
    outputs = dict(dataset_of(d, "outputFacets") for d in event.get("outputs") or ())
    if mine is None:  # accumulate over the run's events
        inputs = _merge(state.inputs, inputs)
        outputs = _merge(state.outputs, outputs)
    flow_run_id, flow_name = _flow_of(run)
    engine = (run_facets.get("processing_engine") or {}).get("name")
    error_facet = run_facets.get("errorMessage") or {}
    status = TERMINAL.get(event_type)
    error = None
    if status == FAILED:
        error = (ERROR_TYPES[event_type], str(error_facet.get("message") or f"the run ended with {event_type}"))
    base = FinishedTaskRun(
        assets=(), upstream=(), metadata={}, status=status or SUCCEEDED, error=error, by=engine,
        event_time=time, task_run_id=run_id, task_name=str(job.get("name")),
        flow_run_id=flow_run_id, flow_name=flow_name,
    )
    if mine is not None:
        base = _restored(base, mine)
    first_id = (mine or {}).get("event_id") if status else None
    new_id = id_sequence(key, uuid_text(first_id, "assetlog facet event_id") if first_id else None)
    events: list[OutgoingEvent] = []
    edges = set(state.edges)
    # An exporter's event lists the upstreams in their original order; others are put in key order.
    ordered_inputs = list(inputs.items()) if mine is not None else sorted(inputs.items())
    for out_key, output in sorted(outputs.items()):
        upstream = tuple(Upstream(Asset(key=in_key, properties=properties_of(dataset)), _declared(dataset),
                                  with_properties=properties_of(dataset) is not None)
                         for in_key, dataset in ordered_inputs if in_key != out_key)
        metadata = metadata_of(out_key, output, event, inputs, exported=mine is not None)
        task_run = replace(base, assets=(Asset(key=out_key, properties=properties_of(output)),), upstream=upstream,
                           metadata={out_key: metadata} if metadata is not None else {})
        produced = events_for(task_run, topics, identity, new_id)
        if status is None:  # not finished: only what is new, and no materialization
            first_seen = out_key not in state.outputs
            produced = [e for e in produced if e.event_type != MATERIALIZATION
                        and (e.record.get("upstream_key"), out_key) not in edges
                        and ("metadata_json" not in e.record or first_seen)]
        edges.update((u.asset.key, out_key) for u in upstream)
        events.extend(produced)
    new_state = RunState(inputs, outputs, frozenset(edges)) if mine is None else state
    return Translation(run_id, key, events, new_state, terminal=status is not None)


def _merge(known: Mapping[str, Dataset], seen: Mapping[str, Dataset]) -> dict[str, Dataset]:
    merged = dict(known)
    for key, dataset in seen.items():
        merged[key] = merged[key].merged(dataset) if key in merged else dataset
    return merged


def _declared(dataset: Dataset) -> str:
    mine = dataset.facets.get(ASSETLOG_FACET)
    declared = mine.get("declared") if isinstance(mine, dict) else None
    return declared if declared in ("INFERRED", "EXPLICIT") else EXPLICIT


def _restored(base: FinishedTaskRun, mine: Mapping[str, Any]) -> FinishedTaskRun:
    """The run record, by, error and task version an Assetlog exporter wrote in its facet."""
    error = mine.get("error")
    return replace(
        base,
        by=mine.get("by"),
        task_name=str(mine.get("task_name") or base.task_name),
        flow_run_id=uuid_text(mine["flow_run_id"], "assetlog facet flow_run_id") if mine.get("flow_run_id") else None,
        flow_name=mine.get("flow_name"),
        task_version=mine.get("task_version"),
        error=(str(error["type"]), str(error["message"])) if isinstance(error, dict) else base.error,
    )
