"""Decoded events as projections see them, and the rules that make one invalid.

Validation is shared by every projection on purpose: both consumers must skip
exactly the same messages, or their tables would disagree about which events
exist. An invalid event raises `InvalidEvent` with a short reason code (written
to dead-letter headers and the `dead_letters` table) and a detail for people.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from assetlog.schemas import (
    DEPENDENCY,
    MATERIALIZATION,
    MAX_ASSET_KEY_LENGTH,
    METADATA,
    RESTRICTED_ASSET_CHARACTERS,
    registry,
    validate_asset_key,
)

try:  # validation's fast path in C (projections/_fast_events.c), built by the install like the Avro reader
    from assetlog.projections import _fast_events
except ImportError:  # built without a C compiler: `to_event` alone validates, with the same results
    _fast_events = None


class InvalidEvent(ValueError):
    """An event that decodes but cannot be projected; `reason` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Position(NamedTuple):
    """Where a message was read: topic, partition, offset (orders like a Kafka log).

    Named tuples (this and `Event`), not frozen dataclasses: one is made per message, and a frozen
    dataclass's constructor costs several times more (measured in bench/README.md).
    """

    topic: str
    partition: int
    offset: int


class Event(NamedTuple):
    """A valid event: the decoded record plus the fields every projection needs, typed.

    `asset_key` is the asset the event is about (for a dependency, its
    downstream); `materialization_event_id` is the materialization it belongs
    to (its own id for a materialization).
    """

    event_type: str
    event_id: str  # canonical lowercase UUID text: orders exactly as PostgreSQL orders uuid values
    event_time: datetime
    asset_key: str
    materialization_event_id: str
    record: Mapping[str, Any]
    position: Position | None = None
    metadata: Mapping[str, Any] | None = None  # parsed metadata_json of a metadata event

    @property
    def sort_key(self) -> tuple[datetime, str]:
        """Last-write-wins order: (event_time, event_id)."""
        return (self.event_time, self.event_id)


# Builds a named tuple from all its fields at C speed (see the end of `to_event` and `consumers.batch.classify`).
_new_tuple = tuple.__new__

_DEFAULTS: dict[str, tuple[tuple[str, Any], ...]] = {}
_FIELD_COUNTS: dict[str, int] = {}
_UNKNOWN_COUNT = 1 << 30  # an event type not looked up yet: `_as_reader` looks it up


def _reader_defaults(event_type: str) -> tuple[tuple[str, Any], ...]:
    """Top-level fields of the newest schema of `event_type` that have a default."""
    found = _DEFAULTS.get(event_type)
    if found is None:
        latest = registry().latest.get(event_type)
        fields = latest.schema.get("fields", ()) if latest is not None else ()
        found = _DEFAULTS[event_type] = tuple((f["name"], f["default"]) for f in fields if "default" in f)
        _FIELD_COUNTS[event_type] = len(fields)
    return found


def _as_reader(event_type: str, record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record as the newest schema reads it: a field it lacks gets the schema's default.

    Decoded records have every field already; records built in memory (tests, tools applying events
    without Kafka) may predate a schema version, and must project exactly as if they had been
    written with an older version and decoded.
    """
    defaults = _reader_defaults(event_type)
    if len(record) >= _FIELD_COUNTS.get(event_type, 0):  # decoded: every field is there already
        return record
    missing = [(name, default) for name, default in defaults if name not in record]
    if not missing:
        return record
    full = dict(record)
    for name, default in missing:
        full[name] = type(default)(default) if isinstance(default, list | dict) else default  # a copy
    return full


def to_event(event_type: str, record: Mapping[str, Any], position: Position | None = None, *,
             text_checked: bool = False) -> Event:
    """Validate a decoded record and return it as an `Event`, or raise `InvalidEvent`.

    `text_checked` says the decoder already proved that no string of the record holds a NUL
    character (`SchemaRegistry.decode_checked`); otherwise every string is checked here.

    Every event of both consumers passes here, so the common case (a valid id, a key seen before,
    no properties) is tested inline and each helper (`_uuid_text`, `_key`, `_check_owners`, ...),
    which holds the rule and its message, is called only when the inline test does not settle it:
    about half the calls per event (bench/README.md, issue 15, fifth pass). The checks run in the
    same order as before, so an event with several faults keeps the same dead-letter reason.
    """
    if len(record) < _FIELD_COUNTS.get(event_type, _UNKNOWN_COUNT):  # decoded records are complete
        record = _as_reader(event_type, record)
    event_id = record.get("event_id")
    if type(event_id) is not str or not _is_uuid_text(event_id):
        _uuid_text(record, "event_id")  # raises, naming the field
    event_id = event_id.lower()  # type: ignore[union-attr]
    event_time = record["event_time"]
    if not isinstance(event_time, datetime) or event_time.tzinfo is None:
        raise InvalidEvent("malformed", f"event_time must be an aware timestamp, got {event_time!r}")
    run = record["run"]
    run_id = run.get("task_run_id")
    if type(run_id) is not str or not _is_uuid_text(run_id):
        _uuid_text(run, "task_run_id", "run.")
    run_id = run.get("flow_run_id")
    if run_id is not None and (type(run_id) is not str or not _is_uuid_text(run_id)):
        _uuid_text(run, "flow_run_id", "run.")
    metadata = None
    if event_type == MATERIALIZATION:
        asset_key = record.get("asset_key")
        if asset_key not in _VALID_KEYS:
            asset_key = _key(record, "asset_key")
        for index, upstream in enumerate(record.get("upstream_keys") or ()):
            if upstream not in _VALID_KEYS:  # known valid keys skip the call (and the dict it needs)
                _key({"upstream_keys": upstream}, "upstream_keys", f"[{index}]")
        materialization_id = event_id
        properties = record.get("properties")
        if properties and properties.get("owners"):  # as `_check_owners` reads them: none, nothing to check
            _check_owners(properties, "properties")
    elif event_type == DEPENDENCY:
        asset_key = record.get("downstream_key")
        if asset_key not in _VALID_KEYS:
            asset_key = _key(record, "downstream_key")
        upstream = record.get("upstream_key")
        if upstream not in _VALID_KEYS:
            upstream = _key(record, "upstream_key")
        if len(asset_key) + len(upstream) > MAX_EDGE_KEY_BYTES // 4:  # only then can they be over the limit
            _check_edge(asset_key, upstream)
        materialization_id = _uuid(record, "materialization_event_id")
        properties = record.get("upstream_properties")
        if properties and properties.get("owners"):  # as `_check_owners` reads them: none, nothing to check
            _check_owners(properties, "upstream_properties")
    elif event_type == METADATA:
        asset_key = record.get("asset_key")
        if asset_key not in _VALID_KEYS:
            asset_key = _key(record, "asset_key")
        materialization_id = _uuid(record, "materialization_event_id")
        metadata = _metadata(record["metadata_json"], text_checked)
    else:
        raise InvalidEvent("unknown-schema", f"no projection knows event type {event_type!r}")
    if not text_checked:
        _check_text(record, "")  # PostgreSQL text cannot hold NUL (nor lone surrogates): name the field
    # tuple.__new__ with every field in order: what `Event(...)` does, without its generated Python __new__
    # (0.3 us less per event; tests/test_validation_fast_path.py compares the result with `Event(...)`'s).
    return _new_tuple(Event, (event_type, event_id, event_time, asset_key, materialization_id, record, position,
                              metadata))


_join_bytes = b"".join


# The record fields `lineage_history` keeps in columns of their own (a dependency's `downstream_key` is
# its `asset_key`), and the fields of `run` likewise. The payload leaves them out: PostgreSQL parses every
# payload into jsonb, and these fields were 70% of a payload's bytes, and cost half of PostgreSQL's CPU for
# a history COPY without indexes (bench/README.md, issue 15, "Ninth pass"). Migration 0009's
# `assetlog_lineage_event` puts them back; tests/test_history_payload.py checks that the two agree.
FIELDS_IN_COLUMNS = ("event_id", "event_time", "asset_key", "upstream_key", "downstream_key", "status",
                     "materialization_event_id")
RUN_FIELDS_IN_COLUMNS = frozenset(("flow_run_id", "flow_name", "task_run_id", "task_name"))


def event_payload(event: Event) -> bytes:
    """The JSON bytes of `lineage_history.payload`: the event's fields that have no column of their own,
    with their Avro names (see `payload_json`); only the lineage projection needs it, so it is made
    there, once per stored event."""
    body = dict(event.record)
    pop = body.pop
    for name in FIELDS_IN_COLUMNS:
        pop(name, None)
    run = pop("run", None)
    if run is not None and not RUN_FIELDS_IN_COLUMNS.issuperset(run):  # a newer schema's own run fields
        body["run"] = {name: value for name, value in run.items() if name not in RUN_FIELDS_IN_COLUMNS}
    if event.metadata is not None:
        del body["metadata_json"]
        body["metadata"] = event.metadata
    try:
        # Joined with nothing for an exact-size copy: orjson hands back its 4 KiB working buffer as the
        # bytes object, and a batch keeps one payload per event until it commits (20,000 payloads: 80 MiB
        # instead of 10). The copy costs about 0.2 us per event.
        return _join_bytes((orjson.dumps(body), b""))
    except TypeError:  # an integer beyond 64 bits in the metadata: valid JSON, so use the slower encoder
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=datetime.isoformat).encode()


# The canonical text form (what uuid4() prints), which PostgreSQL's uuid type always accepts.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The same test in C where the extension was built (0.6 us less per id: 3-4 ids per event);
# tests/test_fast_events.py checks that both decide alike.
_is_uuid_text = _fast_events.is_uuid_text if _fast_events is not None else _UUID_TEXT.fullmatch


def _uuid_text(record: Mapping[str, Any], field: str, prefix: str = "") -> str:
    value = record.get(field)
    if type(value) is not str or not _is_uuid_text(value):
        raise InvalidEvent("invalid-uuid", f"{prefix}{field} is not a UUID: {str(value)[:80]!r}")
    return value


def _uuid(record: Mapping[str, Any], field: str, prefix: str = "") -> str:
    """Lowercase canonical text: compared as strings, such ids order as PostgreSQL's uuid type
    orders them (bytewise), without building a UUID object per event."""
    return _uuid_text(record, field, prefix).lower()


# Keys repeat across events (an asset is materialized many times): remember the valid ones. The C fast
# path checks each key itself instead (see `accept_checked`); this serves `to_event`.
_VALID_KEYS: set[str] = set()
_VALID_KEYS_LIMIT = 100_000


def _key(record: Mapping[str, Any], field: str, suffix: str = "") -> str:
    value = record.get(field)
    if value in _VALID_KEYS:
        return value  # type: ignore[return-value]
    try:
        validate_asset_key(value)
    except ValueError as exc:
        raise InvalidEvent("invalid-key", f"{field}{suffix} {str(value)[:120]!r}: {exc}") from None
    if len(_VALID_KEYS) >= _VALID_KEYS_LIMIT:
        _VALID_KEYS.clear()
    _VALID_KEYS.add(value)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


# Each owner is an entry of the GIN index behind the owner filter, and PostgreSQL refuses an index
# entry over about 2.7 kB: a longer owner would fail its batch again and again, wedging the consumer.
MAX_OWNER_BYTES = 1000


def _check_owners(properties: Mapping[str, Any] | None, field: str) -> None:
    for index, owner in enumerate((properties or {}).get("owners") or ()):
        if len(owner) > MAX_OWNER_BYTES // 4:  # only then can it be over the limit in UTF-8
            size = len(owner.encode("utf-8", "surrogatepass"))
            if size > MAX_OWNER_BYTES:
                raise InvalidEvent("invalid-text", f"{field}.owners[{index}] is {size} bytes long; PostgreSQL "
                                                   f"indexes owners, which may have at most {MAX_OWNER_BYTES}")


# The graph indexes each edge by its two keys together, and a btree index entry holds at most 2704 bytes:
# two long keys of multi-byte characters (each may have 512 characters, up to 2 kB) would not fit.
MAX_EDGE_KEY_BYTES = 2600


def _check_edge(downstream: str, upstream: str) -> None:
    if len(downstream) + len(upstream) > MAX_EDGE_KEY_BYTES // 4:  # only then can they be over the limit
        size = len(downstream.encode("utf-8")) + len(upstream.encode("utf-8"))
        if size > MAX_EDGE_KEY_BYTES:
            raise InvalidEvent("invalid-key", f"upstream_key and downstream_key are {size} bytes long together; "
                                              f"PostgreSQL indexes each edge by both, which may have at most "
                                              f"{MAX_EDGE_KEY_BYTES}")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# Deeper than any real metadata, and far below every limit on its way: Python's recursion limit (about
# 1000 levels, in json and in the consumers' own walks), orjson's 255 levels and PostgreSQL's stack
# depth for jsonb. Deeper metadata would fail somewhere between the decoder and the database.
MAX_METADATA_DEPTH = 200


# 19 digits in a row may be an integer beyond 64 bits, which orjson would turn into a float.
_LONG_DIGITS = re.compile(r"[0-9]{19}")


def _metadata(text: str, text_checked: bool = False) -> Mapping[str, Any]:
    # orjson (several times faster) parses as json does, except that it refuses NaN, infinities and
    # more than 255 levels (json then judges, with json's own messages) and reads integers beyond
    # 64 bits as floats (so text that may hold one goes to json).
    # Without a backslash every parsed string is a piece of the text: when the decoder proved the text
    # free of NUL and lone surrogates (`text_checked`), so are they, and only numbers and depth need a look.
    try:
        value = _metadata_by_json(text) if _LONG_DIGITS.search(text) else orjson.loads(text)
    except orjson.JSONDecodeError:
        value = _metadata_by_json(text)
    if not isinstance(value, dict):
        raise InvalidEvent("invalid-metadata", f"metadata_json must be a JSON object, got {type(value).__name__}")
    _check_json(value, strings=not text_checked or "\\" in text)
    return value


def _metadata_by_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidEvent("invalid-metadata", f"metadata_json is nested more than {MAX_METADATA_DEPTH} levels "
                                               "deep") from None
    except ValueError as exc:
        raise InvalidEvent("invalid-metadata", f"metadata_json is not JSON: {exc}"[:300]) from None


def _check_json(document: dict, strings: bool = True) -> None:
    """Walk parsed metadata without recursion (it may be deep): text PostgreSQL can store (unless
    `strings` is False: known already), finite numbers, at most MAX_METADATA_DEPTH levels."""
    stack: list[tuple[Any, str, int]] = [(document, "metadata_json", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if strings:
                _check_text(value, path)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidEvent("invalid-metadata", "metadata_json holds a non-finite number")
        elif isinstance(value, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidEvent("invalid-metadata", f"metadata_json is nested more than {MAX_METADATA_DEPTH} "
                                                       "levels deep")
            if isinstance(value, dict):
                for name, item in value.items():
                    if strings:
                        _check_text(name, path)
                    stack.append((item, f"{path}.{name}" if strings else path, depth + 1))  # paths name bad text
            elif strings:
                stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
            else:
                stack.extend((item, path, depth + 1) for item in value)


def _check_text(value: Any, path: str) -> None:
    """PostgreSQL text and jsonb cannot hold NUL or unpaired surrogates: refuse them up front,
    or the whole batch would fail in the database again and again."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidEvent("invalid-text", f"{path or 'a field'} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent("invalid-text", f"{path or 'a field'} is not valid Unicode") from None
    elif isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, str):
                continue
            _check_text(name, path)
            _check_text(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_text(item, f"{path}[{index}]")


# Validation's fast path: `accept_checked(event_type, record, position)` is the Event `to_event(event_type,
# record, position, text_checked=True)` returns, for a record the compiled decoder read whose every check
# passes the common way (lowercase ids, keys within the key rule, no owner or edge near its size limit);
# otherwise None, and `to_event` decides and names the reason. It holds the rules' own objects (the
# restricted key characters and the key length from schemas/keys.py, the field counts, `_metadata`,
# MAX_METADATA_DEPTH and the size limits), so a rule changed there changes it too; the few it mirrors in C
# (the key's scheme, "^[a-z0-9]+://"; the common metadata text: no backslash, no 19 digits in a row,
# finite numbers) are compared event by event with `to_event` by tests/test_fast_events.py, which fails
# if they drift. It checks every key rather than asking `_VALID_KEYS`, which forgets at 100,000 keys: past
# that many assets the fast path would otherwise leave most events to `to_event`. None without the extension.
VALIDATION_KIND = "compiled" if _fast_events is not None else "python"  # `assetlog status` shows it
accept_checked: Callable[[str, Mapping[str, Any], Position | None], Event | None] | None = (
    _fast_events.Acceptor(
        event=Event, materialization=MATERIALIZATION, dependency=DEPENDENCY, metadata=METADATA,
        restricted_key_chars="".join(RESTRICTED_ASSET_CHARACTERS), max_key_chars=MAX_ASSET_KEY_LENGTH,
        field_counts=_FIELD_COUNTS, parse_metadata=_metadata, loads=orjson.loads,
        max_owner_chars=MAX_OWNER_BYTES // 4, max_edge_chars=MAX_EDGE_KEY_BYTES // 4, max_depth=MAX_METADATA_DEPTH,
    ) if _fast_events is not None else None
)


def payload_json(event: Event) -> str:
    """`lineage_history.payload` as text: the Avro record with its field names, less the fields the
    history row has columns for (`FIELDS_IN_COLUMNS`), and a metadata event's metadata_json parsed,
    as `metadata`."""
    return event_payload(event).decode("utf-8")
