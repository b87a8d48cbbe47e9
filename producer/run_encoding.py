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
    Upstream,
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


_LAST_PRODUCER: list[tuple[ProducerIdentity, bytes]] = []  # a publisher keeps one identity


def _producer_bytes(identity: ProducerIdentity) -> bytes:
    if _LAST_PRODUCER and _LAST_PRODUCER[0][0] is identity:
        return _LAST_PRODUCER[0][1]
    encoded = _string(identity.host) + write_long(identity.pid) + _string(identity.version)
    _LAST_PRODUCER[:] = [(identity, encoded)]
    return encoded


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


# The pieces a run shares with the runs before it, each keyed by what it is made of (a task's
# runs share their name, tool, version and upstream; a flow run's share its id and name), kept for
# the last few keys only: the encoder runs on one writer thread, once per finished task run.
_MAX_CACHED_PIECES = 256
_UPSTREAM_PIECES: dict[tuple[int, ...], tuple[tuple[Upstream, ...], list[tuple[bytes, bytes]], bytes]] = {}
_RUN_TEXTS: dict[tuple[str | None, ...], tuple[bytes, ...]] = {}
_TIME_HIGH: dict[int, bytes] = {}


def _upstream_pieces(upstream: tuple[Upstream, ...]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(key as an Avro string, declared + properties) per upstream, and the upstream_keys array."""
    ident = tuple(map(id, upstream))
    entry = _UPSTREAM_PIECES.get(ident)
    if entry is None or entry[0] != upstream:
        pieces: list[tuple[bytes, bytes]] = []
        for u in upstream:
            _, _, key_s, properties_b = _asset_pieces(u.asset)
            pieces.append((key_s, _DECLARED[u.declared] + (properties_b if u.with_properties else b"\x00")))
        keys_b = (write_long(len(pieces)) + b"".join(k for k, _ in pieces) + b"\x00") if pieces else b"\x00"
        if len(_UPSTREAM_PIECES) >= _MAX_CACHED_PIECES:
            _UPSTREAM_PIECES.clear()
        entry = _UPSTREAM_PIECES[ident] = (upstream, pieces, keys_b)
    return entry[1], entry[2]


def _run_texts(key: tuple[str | None, str | None, str, str | None, str | None]) -> tuple[bytes, ...]:
    """(flow run id + flow name, task name, tool, task version) encoded, for the runs of one task in
    one flow run (cached: they share them)."""
    flow_run_id, flow_name, task_name, by, task_version = key
    if len(_RUN_TEXTS) >= _MAX_CACHED_PIECES:
        _RUN_TEXTS.clear()
    texts = _RUN_TEXTS[key] = (_optional_string(flow_run_id) + _optional_string(flow_name), _string(task_name),
                               _optional_string(by), _optional_string(task_version))
    return texts


def _time_long(micros: int) -> bytes:
    """`write_long` of a timestamp: the low 21 bits of its zigzag value as three varint bytes, the
    varint of the rest cached (it changes about once a second)."""
    if micros < 1 << 20:
        return write_long(micros)
    n = micros << 1  # zigzag of a non-negative number
    high = _TIME_HIGH.get(n >> 21)
    if high is None:
        if len(_TIME_HIGH) >= _MAX_CACHED_PIECES:
            _TIME_HIGH.clear()
        high = _TIME_HIGH[n >> 21] = varint(n >> 21)
    return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, ((n >> 14) & 0x7F) | 0x80)) + high


def _run_id(task_run_id: str) -> bytes:
    return b"H" + task_run_id.encode() if len(task_run_id) == 36 else _string(task_run_id)


def encode_run_pinned(run: FinishedTaskRun, topics: Topics, identity: ProducerIdentity,
                      ids: IdSource) -> list[EncodedEvent]:
    """The same messages as encoding `events_for(run, ...)`, in the same order, ids drawn alike."""
    if run.event_ids is not None:
        ids = FixedIds(run.event_ids)
    h_mat, h_dep, h_meta, t_mat, t_dep, t_meta = _fixed(topics.prefix)
    time_b = _time_long(run.event_time)
    status_b = _STATUS[run.status]
    texts_key = (run.flow_run_id, run.flow_name, run.task_name, run.by, run.task_version)
    texts = _RUN_TEXTS.get(texts_key)
    if texts is None:
        texts = _run_texts(texts_key)
    flow_b, name_b, by_b, version_b = texts
    run_b = b"".join((flow_b, _run_id(run.task_run_id), name_b))
    producer_b = _producer_bytes(identity)
    tail = status_b + run_b + producer_b  # status, run, producer: how dependencies and metadata end
    upstream, keys_b = _upstream_pieces(run.upstream) if run.upstream else ((), b"\x00")
    error_b = b"\x00" if run.error is None else _error(run.error)
    mat_tail = b"".join((by_b, keys_b, error_b, run_b, producer_b, version_b))
    metadata = run.metadata
    new_id = ids.encoded
    out: list[EncodedEvent] = []
    append = out.append
    for asset in run.assets:
        _, key, key_s, properties_b = _asset_pieces(asset)
        materialization_id = new_id()
        append((t_mat, key, b"".join((
            h_mat, materialization_id, time_b, key_s, status_b, properties_b, mat_tail))))
        for upstream_key, declared_and_properties in upstream:
            append((t_dep, key, b"".join((
                h_dep, new_id(), time_b, upstream_key, key_s, declared_and_properties,
                materialization_id, tail))))
        asset_metadata = metadata.get(asset.key)
        if asset_metadata is not None:
            append((t_meta, key, b"".join((
                h_meta, new_id(), time_b, key_s, _string(asset_metadata), materialization_id, tail))))
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
