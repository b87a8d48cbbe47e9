"""A finished materializing task run, and the events it becomes.

Pure functions: no I/O, no clock, no global state, so the contract between the
producer and the consumers (which events, which keys, which fields) is testable
with plain values. The one exception is where ids come from (`EventIdSource`):
they carry the time they were minted. The record dicts follow `schemas/*.avsc` field for field.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from assetlog import __version__
from assetlog.config import Topics
from assetlog.producer.assets import Asset
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
INFERRED = "INFERRED"
EXPLICIT = "EXPLICIT"

# Error messages travel inside every event of a failed run; keep them bounded.
MAX_ERROR_MESSAGE_LENGTH = 4000


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_event_id() -> str:
    """A time-ordered (version 7) UUID as text; a task run and a flow run each mint one.

    Drawn from this thread's `EventIdSource`: a slice of a ready-made batch, several times
    faster than `str(uuid.uuid4())` or formatting random bits per id.
    """
    try:
        source = _THREAD_IDS.source
    except AttributeError:
        source = _THREAD_IDS.source = EventIdSource()
    return source()


_ID_BATCH = 256  # ids minted at once; the 12-bit counter counts them


class EventIdSource:
    """Mints version 7 UUIDs (RFC 9562) 256 at a time, from one draw of random bits.

    Why version 7: the ids lead with the time they were minted, so each consumer's
    unique indexes on event ids (the history's key, its id registry, the
    materialization index) grow at their right edge instead of at a random leaf.
    After a checkpoint PostgreSQL logs every leaf page an insert touches first as
    a full page image; with random ids that is one page per id, and the history
    wrote 2.8x the WAL per event at 3 million rows, 3.7x at 10 million (bench/README.md, H3).

    Layout of one id: 48 bits of Unix time in milliseconds, the version, a 12-bit
    counter (rand_a, RFC 9562 section 6.2 method 1) that rises through the batch
    in the order ids are handed out, the variant and 62 random bits. Every batch
    takes a millisecond later than the one before it from this source, even if
    the clock stepped back, so one source's ids rise in minting order. A batch
    older than a second is dropped unminted: an id's time is at most a second
    before its use, also in a process that runs one task an hour.

    `encoded()` gives an id already as an Avro string (length byte + 36 ASCII
    characters), which is what the run encoder needs: filling 256 ids per hex
    digit position with strided slice copies costs a fraction of formatting
    each one, and one split of the batch on a separator byte (never in an id)
    cuts out all 256 at once. Not thread-safe: each publisher's writer thread
    owns one, and `new_event_id` keeps one per thread (a forked child builds its own).
    """

    _BATCH = _ID_BATCH
    _WIDTH = 38  # the separator b"\0", b"H" (Avro length 36) and the 36 characters
    _FRESH_FOR_NS = 1_000_000_000
    # Where the 32 hex digits go in "tttttttt-tttt-7ccc-Vxxx-xxxxxxxxxxxx" (after the separator and length byte).
    _DIGITS = (*range(2, 10), *range(11, 15), *range(16, 20), *range(21, 25), *range(26, 38))
    _VARIANT_DIGIT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
    # The counter's three hex digits, one column each: the batch is handed out from its end (list.pop),
    # so the last id counts 000 and the first 0ff.
    _COUNTER = tuple("".join(f"{_ID_BATCH - 1 - i:03x}"[digit] for i in range(_ID_BATCH)).encode()
                     for digit in range(3))

    def __init__(self) -> None:
        self._buffer = bytearray(b"\0H00000000-0000-7000-0000-000000000000" * self._BATCH)
        # Ids of the current batch, handed out by list.pop; encoded ids and texts come from batches of
        # their own, so one is never the other.
        self._encoded: list[bytes] = []
        self._texts: list[str] = []
        self._encoded_stale_at = self._texts_stale_at = 0  # time.monotonic_ns() past which a batch is dropped
        self._last_ms = 0

    def _batch(self) -> bytes:
        """`_BATCH` fresh ids, each as b"\0" + an Avro string (b"H" + 36 characters), end to end."""
        self._last_ms = milliseconds = max(time.time_ns() // 1_000_000, self._last_ms + 1)
        stamp = b"%012x" % milliseconds
        digits = _RANDOM.getrandbits(64 * self._BATCH).to_bytes(8 * self._BATCH, "little").hex().encode()
        buffer, width, batch = self._buffer, self._WIDTH, self._BATCH
        for index, position in enumerate(self._DIGITS):
            if index < 12:
                column = stamp[index:index + 1] * batch  # the time, the same in the whole batch
            elif index == 12:
                continue  # the version digit, 7, is in the buffer from the start
            elif index < 16:
                column = self._COUNTER[index - 13]
            elif index == 16:
                column = digits[0::16].translate(self._VARIANT_DIGIT)  # RFC 9562 variant: 8, 9, a or b
            else:
                column = digits[index - 16::16]
            buffer[position::width] = column
        return bytes(buffer)

    def encoded(self) -> bytes:
        if time.monotonic_ns() < self._encoded_stale_at:
            try:
                return self._encoded.pop()
            except IndexError:
                pass
        self._encoded = self._batch().split(b"\0")[1:]
        self._encoded_stale_at = time.monotonic_ns() + self._FRESH_FOR_NS
        return self._encoded.pop()

    def __call__(self) -> str:
        if time.monotonic_ns() < self._texts_stale_at:
            try:
                return self._texts.pop()
            except IndexError:
                pass
        self._texts = self._batch().decode().split("\0H")[1:]
        self._texts_stale_at = time.monotonic_ns() + self._FRESH_FOR_NS
        return self._texts.pop()


# Where ids come from: a private generator, seeded from os.urandom and reseeded in a forked child
# (with fresh per-thread sources), so a user's `random.seed()` cannot repeat ids and two processes
# never share a sequence. Not `os.urandom` per id: that system call releases the GIL, and in a task
# run the writer thread then took it for up to a switch interval (a quarter of a run's wall time).
_RANDOM = random.Random()
_THREAD_IDS = threading.local()


def _after_fork_in_child() -> None:
    global _THREAD_IDS
    _RANDOM.seed()
    _THREAD_IDS = threading.local()


os.register_at_fork(after_in_child=_after_fork_in_child)


# uuid5 namespace of the event ids Assetlog derives from another system's event ids.
DERIVED_ID_NAMESPACE = uuid.UUID("5f0c9a7e-2b1d-5c4e-9a33-1d2f6b8e4c70")
_NAMESPACE_BYTES = DERIVED_ID_NAMESPACE.bytes


def derived_event_id(seed: str, part: str = "") -> str:
    """The id of one Assetlog event made from an outside event identified by `seed`.

    `part` is "" for the materialization itself, "dependency/<upstream key>" or
    "metadata" for the events that go with it. Any producer that sees the same
    outside event (the Prefect bridge, the follower of a Prefect server) gets the
    same id, so the consumers count it once. It is `str(uuid.uuid5(DERIVED_ID_NAMESPACE,
    name))`, computed without the UUID object (a third of the time, four ids per task).
    """
    name = f"{seed}/{part}" if part else seed
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])  # RFC 4122 name-based
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def derived_event_ids(run: FinishedTaskRun, seeds: Mapping[str, str]) -> tuple[str, ...]:
    """`run`'s event ids from one seed per materialized asset key, in `events_for`'s order."""
    ids: list[str] = []
    for asset in run.assets:
        seed = seeds[asset.key]
        ids.append(derived_event_id(seed))
        ids.extend(derived_event_id(seed, f"dependency/{u.asset.key}") for u in run.upstream)
        if run.metadata.get(asset.key) is not None:
            ids.append(derived_event_id(seed, "metadata"))
    return tuple(ids)


class FixedIds:
    """An id source that hands out a run's precomputed `event_ids`, in order."""

    def __init__(self, ids: tuple[str, ...]) -> None:
        self._ids: Iterator[str] = iter(ids)

    def __call__(self) -> str:
        return next(self._ids)

    def encoded(self) -> bytes:
        return b"H" + next(self._ids).encode()  # Avro string: length 36 (zig-zag 72, "H"), then the text


@dataclass(frozen=True, slots=True)
class ProducerIdentity:
    """Who wrote an event: host, process and Assetlog version."""

    host: str
    pid: int
    version: str

    @classmethod
    def current(cls) -> ProducerIdentity:
        return cls(host=socket.gethostname(), pid=os.getpid(), version=__version__)

    def record(self) -> dict[str, object]:
        return {"host": self.host, "pid": self.pid, "version": self.version}


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream asset of a materialization.

    `declared` is EXPLICIT when the materializing task lists it in `asset_deps`
    (explicit wins over inferred). `with_properties` is true when the Asset came
    from some task's `asset_deps`: only then do its properties travel with the
    dependency (that is how external assets get their properties).
    """

    asset: Asset
    declared: str
    with_properties: bool = False

    def properties_record(self) -> dict[str, object] | None:
        if not self.with_properties:
            return None
        return properties_record(self.asset)


@dataclass(slots=True)
class FinishedTaskRun:
    """The final attempt of a materializing task run, as the runtime saw it.

    Treat it as immutable; it is not frozen only because a frozen dataclass takes
    several times longer to build, and one is built at the end of every task run.
    """

    assets: tuple[Asset, ...]
    upstream: tuple[Upstream, ...]
    metadata: Mapping[str, str]  # asset key -> the merged metadata, as JSON object text
    status: str
    error: tuple[str, str] | None  # (exception type, message) when FAILED
    by: str | None
    event_time: int  # microseconds since the epoch, UTC: task end
    task_run_id: str
    task_name: str
    flow_run_id: str | None = None
    flow_name: str | None = None
    task_version: str | None = None  # @task(version=...): materialization schema v2
    # Ids for the run's events in `events_for`'s order, when they are derived from another system's
    # own event ids (`derived_event_ids`) instead of minted at random; None: the publisher mints them.
    event_ids: tuple[str, ...] | None = None

    def run_record(self) -> dict[str, object]:
        return {
            "flow_run_id": self.flow_run_id,
            "flow_name": self.flow_name,
            "task_run_id": self.task_run_id,
            "task_name": self.task_name,
        }


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """One Kafka message to be: topic, key (the asset key), event type and Avro record."""

    topic: str
    key: str
    event_type: str
    record: dict[str, object]


def properties_record(asset: Asset) -> dict[str, object] | None:
    """The asset's properties, or None when it has none: `AssetProperties()` with every
    field None means "no properties", as in Prefect (it never clears stored ones)."""
    props = asset.properties
    if props is None or props.is_empty():
        return None
    return {
        "name": props.name,
        "description": props.description,
        "owners": list(props.owners) if props.owners is not None else None,
        "url": props.url,
    }


def error_record(error: tuple[str, str] | None) -> dict[str, str] | None:
    if error is None:
        return None
    kind, message = error
    if len(message) > MAX_ERROR_MESSAGE_LENGTH:
        message = message[: MAX_ERROR_MESSAGE_LENGTH - 1] + "\u2026"
    return {"type": kind, "message": message}


def events_for(
    run: FinishedTaskRun,
    topics: Topics,
    producer: ProducerIdentity,
    new_id: Callable[[], str] = new_event_id,
) -> list[OutgoingEvent]:
    """Every event of one finished task run, per asset: its materialization, one
    dependency per upstream, then its metadata when some was added.

    All events share the run's event_time, run and producer records; each has its
    own id, and dependencies and metadata point at their materialization's id.
    `derived_event_ids` follows the same order.
    """
    if run.event_ids is not None:
        new_id = FixedIds(run.event_ids)
    run_rec = run.run_record()
    producer_rec = producer.record()
    upstream_keys = [u.asset.key for u in run.upstream]
    error = error_record(run.error)
    events: list[OutgoingEvent] = []
    for asset in run.assets:
        materialization_id = new_id()
        events.append(OutgoingEvent(topics.materializations, asset.key, MATERIALIZATION, {
            "event_id": materialization_id,
            "event_time": run.event_time,
            "asset_key": asset.key,
            "status": run.status,
            "properties": properties_record(asset),
            "by": run.by,
            "upstream_keys": upstream_keys,
            "error": error,
            "run": run_rec,
            "producer": producer_rec,
            "task_version": run.task_version,
        }))
        for upstream in run.upstream:
            events.append(OutgoingEvent(topics.dependencies, asset.key, DEPENDENCY, {
                "event_id": new_id(),
                "event_time": run.event_time,
                "upstream_key": upstream.asset.key,
                "downstream_key": asset.key,
                "declared": upstream.declared,
                "upstream_properties": upstream.properties_record(),
                "materialization_event_id": materialization_id,
                "status": run.status,
                "run": run_rec,
                "producer": producer_rec,
            }))
        metadata = run.metadata.get(asset.key)
        if metadata is not None:
            events.append(OutgoingEvent(topics.metadata, asset.key, METADATA, {
                "event_id": new_id(),
                "event_time": run.event_time,
                "asset_key": asset.key,
                "metadata_json": metadata,
                "materialization_event_id": materialization_id,
                "status": run.status,
                "run": run_rec,
                "producer": producer_rec,
            }))
    return events
