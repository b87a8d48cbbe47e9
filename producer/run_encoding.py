"""Encode a finished task run's events straight from the run, without records.

All events of one run share most of their bytes (event time, status, run,
producer, the upstream list), so they are encoded once per run and each event
is a join of ready-made pieces plus its own id: several times cheaper than
building records (`events.events_for`) and encoding them one by one, which is
what keeps the publisher above half the speed of raw `produce()`.

It is written for the exact field layout of the newest schemas (materialization
v2, dependency and metadata v1) and pinned to their fingerprints: if a schema
changes, `run_encoder()` returns the generic path (records + compiled encoders)
instead, and a test (which also checks that both paths write identical bytes)
points here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Protocol

from assetlog.config import Topics
from assetlog.producer.assets import Asset
from assetlog.producer.encoding import _SMALL, encoder_for, write_long
from assetlog.producer.events import (
    FinishedTaskRun,
    FixedIds,
    ProducerIdentity,
    error_record,
    events_for,
    properties_record,
)
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA, registry

EncodedEvent = tuple[str, bytes, bytes]  # (topic, key, value)


class IdSource(Protocol):
    """Mints event ids: as text, or already encoded as an Avro string."""

    def __call__(self) -> str: ...

    def encoded(self) -> bytes: ...


RunEncoder = Callable[[FinishedTaskRun, Topics, ProducerIdentity, IdSource], list[EncodedEvent]]

# The writer schemas this module's layout was written for (CRC-64-AVRO, hex).
PINNED_FINGERPRINTS = {
    MATERIALIZATION: "25e80184b6cac2ad",  # v2: v1 + task_version
    DEPENDENCY: "a59d2745219843f6",
    METADATA: "965924f1dda5b33e",
}
_STATUS = {"SUCCEEDED": b"\x00", "FAILED": b"\x02"}
_DECLARED = {"INFERRED": b"\x00", "EXPLICIT": b"\x02"}


def _string(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    return (_SMALL[n] if n < 64 else write_long(n)) + data


def _optional_string(text: str | None) -> bytes:
    return b"\x00" if text is None else b"\x02" + _string(text)


def _strings(items: Sequence[str]) -> bytes:
    if not items:
        return b"\x00"
    return write_long(len(items)) + b"".join(_string(item) for item in items) + b"\x00"


def _properties(record: dict[str, Any] | None) -> bytes:
    if record is None:
        return b"\x00"
    owners = record["owners"]
    return b"".join((
        b"\x02",
        _optional_string(record["name"]),
        _optional_string(record["description"]),
        b"\x00" if owners is None else b"\x02" + _strings(owners),
        _optional_string(record["url"]),
    ))


def _error(error: tuple[str, str] | None) -> bytes:
    record = error_record(error)
    if record is None:
        return b"\x00"
    return b"\x02" + _string(record["type"]) + _string(record["message"])


@cache
def _producer_bytes(identity: ProducerIdentity) -> bytes:
    return _string(identity.host) + write_long(identity.pid) + _string(identity.version)


# id(asset) -> (asset, key as bytes, key as an Avro string, properties union). Holding the
# asset keeps its id from being reused; tasks declare their assets once, so this stays small.
_ASSET_PIECES: dict[int, tuple[Asset, bytes, bytes, bytes]] = {}
_MAX_CACHED_ASSETS = 10_000


def _asset_pieces(asset: Asset) -> tuple[Asset, bytes, bytes, bytes]:
    entry = _ASSET_PIECES.get(id(asset))
    if entry is None or entry[0] is not asset:
        if len(_ASSET_PIECES) >= _MAX_CACHED_ASSETS:
            _ASSET_PIECES.clear()
        entry = (asset, asset.key.encode(), _string(asset.key), _properties(properties_record(asset)))
        _ASSET_PIECES[id(asset)] = entry
    return entry


def encode_run_v1(run: FinishedTaskRun, topics: Topics, identity: ProducerIdentity,
                  ids: IdSource) -> list[EncodedEvent]:
    """The same messages as encoding `events_for(run, ...)`, in the same order, ids drawn alike."""
    if run.event_ids is not None:
        ids = FixedIds(run.event_ids)
    h_mat, h_dep, h_meta = _headers()
    time_b = write_long(run.event_time)
    status_b = _STATUS[run.status]
    run_b = b"".join((_optional_string(run.flow_run_id), _optional_string(run.flow_name),
                      _string(run.task_run_id), _string(run.task_name)))
    producer_b = _producer_bytes(identity)
    tail = status_b + run_b + producer_b  # status, run, producer: how dependencies and metadata end
    upstream: list[tuple[bytes, bytes]] = []
    for u in run.upstream:
        _, _, key_s, properties_b = _asset_pieces(u.asset)
        upstream.append((key_s, _DECLARED[u.declared] + (properties_b if u.with_properties else b"\x00")))
    keys_b = (write_long(len(upstream)) + b"".join(k for k, _ in upstream) + b"\x00") if upstream else b"\x00"
    mat_tail = b"".join((_optional_string(run.by), keys_b, _error(run.error), run_b, producer_b,
                         _optional_string(run.task_version)))
    metadata = run.metadata
    new_id = ids.encoded
    out: list[EncodedEvent] = []
    append = out.append
    for asset in run.assets:
        _, key, key_s, properties_b = _asset_pieces(asset)
        materialization_id = new_id()
        append((topics.materializations, key, b"".join((
            h_mat, materialization_id, time_b, key_s, status_b, properties_b, mat_tail))))
        for upstream_key, declared_and_properties in upstream:
            append((topics.dependencies, key, b"".join((
                h_dep, new_id(), time_b, upstream_key, key_s, declared_and_properties,
                materialization_id, tail))))
        asset_metadata = metadata.get(asset.key)
        if asset_metadata is not None:
            append((topics.metadata, key, b"".join((
                h_meta, new_id(), time_b, key_s, _string(asset_metadata), materialization_id, tail))))
    return out


@cache
def _headers() -> tuple[bytes, bytes, bytes]:
    reg = registry()
    return tuple(reg.writer(t).header for t in (MATERIALIZATION, DEPENDENCY, METADATA))  # type: ignore[return-value]


def encode_run_generic(run: FinishedTaskRun, topics: Topics, identity: ProducerIdentity,
                       ids: IdSource) -> list[EncodedEvent]:
    """Records, then the compiled (or fastavro) encoder of each event's newest schema."""
    memo: dict[int, bytes] = {}  # the run's shared records stay alive while it is used
    return [(event.topic, event.key.encode(), encoder_for(event.event_type)(event.record, memo))
            for event in events_for(run, topics, identity, ids)]


def run_encoder() -> RunEncoder:
    """The fast path when the schemas are the ones it was written for, else the generic one."""
    reg = registry()
    pinned = all(reg.writer(t).fingerprint.hex() == fp for t, fp in PINNED_FINGERPRINTS.items())
    return encode_run_v1 if pinned else encode_run_generic
