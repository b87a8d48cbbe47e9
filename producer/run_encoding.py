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
from assetlog.producer.encoding import _SMALL, encoder_for, varint, write_long
from assetlog.producer.event_builders import (
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


# A run's shape: what its events share with the other runs of its task in its flow run (assets,
# upstream, names, status, producer, topics), encoded once as the constant stretches between the
# bytes each run has of its own (event ids, time, task run id, metadata). Keyed by the identity of
# the assets and upstream tuples (a task computes them once for all its runs; the entry holds them,
# so their ids cannot be reused) and the texts; kept for the last few shapes only. The encoder runs
# on the writer thread, once per finished task run (and on a task's thread to measure a run near
# the size limit): entries are never changed once stored, so a lookup racing a store is harmless.
_MAX_CACHED_SHAPES = 256
_SHAPES: dict[tuple[object, ...], tuple[object, object, object, tuple[Any, ...]]] = {}
_TIME_HIGH: dict[int, bytes] = {}


def _shape(run: FinishedTaskRun, topics: Topics, identity: ProducerIdentity) -> tuple[Any, ...]:
    """(per asset: its key as bytes, its key, the materialization's stretches before and after the
    run id, each dependency's stretch between the time and the materialization id, its key as an
    Avro string), the three headers and topics, and the stretches dependencies and metadata share
    before and after the run id."""
    h_mat, h_dep, h_meta, t_mat, t_dep, t_meta = _fixed(topics.prefix)
    status_b = _STATUS[run.status]
    flow_b = _optional_string(run.flow_run_id) + _optional_string(run.flow_name)
    after_run = _string(run.task_name) + _producer_bytes(identity)
    upstream: list[tuple[bytes, bytes]] = []
    for u in run.upstream:
        _, _, key_s, properties_b = _asset_pieces(u.asset)
        upstream.append((key_s, _DECLARED[u.declared] + (properties_b if u.with_properties else b"\x00")))
    keys_b = (write_long(len(upstream)) + b"".join(k for k, _ in upstream) + b"\x00") if upstream else b"\x00"
    error_b = b"\x00" if run.error is None else _error(run.error)
    per_asset = []
    for asset in run.assets:
        _, key, key_s, properties_b = _asset_pieces(asset)
        per_asset.append((
            key, asset.key,
            b"".join((key_s, status_b, properties_b, _optional_string(run.by), keys_b, error_b, flow_b)),
            after_run + _optional_string(run.task_version),
            tuple(upstream_key + key_s + declared_and_properties for upstream_key, declared_and_properties in upstream),
            key_s,
        ))
    return tuple(per_asset), h_mat, h_dep, h_meta, t_mat, t_dep, t_meta, status_b + flow_b, after_run


def _shape_of(run: FinishedTaskRun, topics: Topics, identity: ProducerIdentity) -> tuple[Any, ...]:
    if run.error is not None:  # a failed run's message is its own: not worth keeping
        return _shape(run, topics, identity)
    assets, upstream = run.assets, run.upstream
    key = (id(assets), id(upstream), id(identity), topics.prefix, run.status, run.task_name, run.flow_run_id,
           run.flow_name, run.by, run.task_version)
    entry = _SHAPES.get(key)
    if entry is None or entry[0] is not assets or entry[1] is not upstream or entry[2] is not identity:
        if len(_SHAPES) >= _MAX_CACHED_SHAPES:
            _SHAPES.clear()
        entry = _SHAPES[key] = (assets, upstream, identity, _shape(run, topics, identity))
    return entry[3]


def _time_long(micros: int) -> bytes:
    """`write_long` of a timestamp: the low 21 bits of its zigzag value as three varint bytes, the
    varint of the rest cached (it changes about once a second)."""
    if micros < 1 << 20:
        return write_long(micros)
    n = micros << 1  # zigzag of a non-negative number
    high = _TIME_HIGH.get(n >> 21)
    if high is None:
        if len(_TIME_HIGH) >= _MAX_CACHED_SHAPES:
            _TIME_HIGH.clear()
        high = _TIME_HIGH[n >> 21] = varint(n >> 21)
    return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, ((n >> 14) & 0x7F) | 0x80)) + high


def _run_id(task_run_id: str) -> bytes:
    """A run id as an Avro string; a UUID's 36 ASCII characters take the one-byte length b"H" (36).
    Measured in bytes: 36 characters that are not all ASCII are longer, and took the wrong length."""
    raw = task_run_id.encode()
    return b"H" + raw if len(raw) == 36 else _string(task_run_id)


def encode_run_pinned(run: FinishedTaskRun, topics: Topics, identity: ProducerIdentity,
                      ids: IdSource) -> list[EncodedEvent]:
    """The same messages as encoding `events_for(run, ...)`, in the same order, ids drawn alike."""
    if run.event_ids is not None:
        ids = FixedIds(run.event_ids)
    per_asset, h_mat, h_dep, h_meta, t_mat, t_dep, t_meta, between_run, after_run = _shape_of(run, topics, identity)
    time_b = _time_long(run.event_time)
    run_b = _run_id(run.task_run_id)
    metadata = run.metadata
    new_id = ids.encoded
    out: list[EncodedEvent] = []
    append = out.append
    for key, asset_key, mat_before_run, mat_after_run, dependencies, key_s in per_asset:
        materialization_id = new_id()
        append((t_mat, key, b"".join((h_mat, materialization_id, time_b, mat_before_run, run_b, mat_after_run))))
        for dependency in dependencies:
            append((t_dep, key, b"".join((
                h_dep, new_id(), time_b, dependency, materialization_id, between_run, run_b, after_run))))
        asset_metadata = metadata.get(asset_key)
        if asset_metadata is not None:
            append((t_meta, key, b"".join((
                h_meta, new_id(), time_b, key_s, _string(asset_metadata), materialization_id, between_run, run_b,
                after_run))))
    return out


@cache
def _fixed(prefix: str) -> tuple[bytes, bytes, bytes, str, str, str]:
    """The three schema headers, then the three topic names."""
    return (*_headers(), *Topics(prefix).events)  # type: ignore[return-value]


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
    return encode_run_pinned if pinned else encode_run_generic
