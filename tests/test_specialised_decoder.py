"""The generated Avro readers give exactly what fastavro gives: the same record for every valid
event of every schema version, the same dead-letter reason for every invalid message.

`SchemaRegistry.decode` (generated reader, fastavro when it refuses) is compared with
`SchemaRegistry.decode_generic` (fastavro alone), message by message. No broker or database:
decoding is pure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from types import SimpleNamespace
from typing import Any

from hostile_events import hostile_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assetlog.config import Topics
from assetlog.projections import events
from assetlog.projections.events import InvalidEvent
from assetlog.schemas import DecodeError, registry
from assetlog.schemas.specialised import compile_reader, reader_source

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
VERSIONS = sorted(registry().by_fingerprint.values(), key=lambda v: v.source)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def raw(version: Any) -> dict:
    return json.loads(resources.files("assetlog.schemas").joinpath(version.source).read_text("utf-8"))


def values(schema: Any) -> st.SearchStrategy[Any]:
    """Any value the Avro schema allows (text of every kind, NUL and control characters included)."""
    if isinstance(schema, list):
        return st.one_of([values(branch) for branch in schema])
    if schema == "null":
        return st.none()
    if schema == "string":
        return st.text(max_size=30)
    if schema == "int":
        return st.integers(-(2**31), 2**31 - 1)
    if schema == "long":
        return st.integers(-(2**63), 2**63 - 1)
    kind = schema["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: values(f["type"]) for f in schema["fields"]})
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=4)
    if kind == "long" and schema.get("logicalType") == "timestamp-micros":
        return st.integers(MIN_MICROS, MAX_MICROS).map(lambda us: EPOCH + timedelta(microseconds=us))
    return values(kind)


def outcome(decode, data: bytes | None) -> tuple[str, Any]:
    try:
        return "ok", decode(data)
    except DecodeError as exc:
        return "dead", exc.reason


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


def same_as_generic(data: bytes | None) -> None:
    fast, generic = outcome(registry().decode, data), outcome(registry().decode_generic, data)
    assert fast == generic
    if fast[0] == "ok":
        _type, record, plain = registry().decode_checked(data)
        if any("\x00" in text for text in strings(record)):
            assert not plain, "a record with a NUL character must not pass as checked"


def test_every_shipped_schema_has_a_generated_reader():
    for version in VERSIONS:
        assert compile_reader(version.schema, version.source) is not None, version.source
    assert "fastavro" not in reader_source(VERSIONS[0].schema)[0]


@FAST
@given(data=st.data())
def test_random_valid_events_of_every_version_decode_as_fastavro_decodes_them(data):
    _version, _record, encoded = drawn_event(data)
    assert outcome(registry().decode, encoded)[0] == "ok"
    same_as_generic(encoded)


@FAST
@given(data=st.data())
def test_mutated_bytes_of_valid_events_get_the_same_dead_letter_reason(data):
    _version, _record, encoded = drawn_event(data)
    same_as_generic(mutated(data, bytearray(encoded)))


def drawn_event(data: st.DataObject) -> tuple[Any, dict[str, Any], bytes]:
    """A random valid event of a random shipped schema version: (version, record, its encoded bytes)
    (shared with tests/test_compiled_reader.py)."""
    version = data.draw(st.sampled_from(VERSIONS))
    record = data.draw(values(raw(version)))
    return version, record, registry().encode(version.event_type, record, version.version)


def mutated(data: st.DataObject, encoded: bytearray) -> bytes:
    """A valid event's bytes with one hostile change after its 10-byte header: cut short, a bit flipped,
    bytes appended or spliced in, or bytes that make long varints, surrogates and overlong UTF-8 likelier
    than random ones written over it (shared with tests/test_compiled_reader.py)."""
    how = data.draw(st.sampled_from(["truncate", "flip", "append", "splice", "overwrite"]))
    at = data.draw(st.integers(10, len(encoded)))
    if how == "truncate":
        del encoded[at:]
    elif how == "flip":
        encoded[min(at, len(encoded) - 1)] ^= data.draw(st.integers(1, 255))
    elif how == "append":
        encoded += data.draw(st.binary(min_size=1, max_size=8))
    elif how == "splice":
        encoded[at:at] = data.draw(st.binary(min_size=1, max_size=12))
    else:
        chunk = data.draw(st.lists(st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF, 0xED, 0xA0, 0xC0, 0xF4]),
                                   min_size=1, max_size=12))
        encoded[at:at + len(chunk)] = bytes(chunk)
    return bytes(encoded)


@FAST
@given(header=st.sampled_from([v.header for v in VERSIONS] + [b"", b"\xc3\x01", b"\xc3\x02" + bytes(8)]),
       body=st.binary(max_size=120))
def test_random_bytes_under_every_header_get_the_same_dead_letter_reason(header, body):
    same_as_generic(header + body)


@FAST
@given(hostile=hostile_message(SimpleNamespace(topics=Topics("decoder"))))
def test_hostile_messages_decode_as_fastavro_decodes_them(hostile):
    same_as_generic(hostile.value)



def metadata_outcome(parse, text: str) -> tuple[str, Any]:
    try:
        value = parse(text)
        return "ok", json.dumps(value, sort_keys=True)  # types included: 1 and 1.0 differ
    except InvalidEvent as exc:
        return "dead", exc.reason


def metadata_by_json_alone(text: str) -> Any:
    value = events._metadata_by_json(text)
    if not isinstance(value, dict):
        raise InvalidEvent("invalid-metadata", "not an object")
    events._check_json(value)
    return value


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12)


@FAST
@given(value=st.dictionaries(st.text(max_size=5), JSON, max_size=4), garble=st.sampled_from(["", "x", "]", "NaN"]))
def test_metadata_parsed_by_orjson_as_json_parses_it(value, garble):
    """The metadata fast path (orjson) accepts and refuses exactly what json does, with the same
    values (big integers stay integers) and the same reason."""
    text = json.dumps(value, allow_nan=True)
    text = text[:-1] + garble + text[-1:] if garble else text
    assert metadata_outcome(events._metadata, text) == metadata_outcome(metadata_by_json_alone, text)


TRICKY = st.sampled_from(["\x00", "a\x00", "\ud800", "b\udfff", "\\", "\u00e9", "\U0001f600"])


@FAST
@given(value=st.dictionaries(st.text(max_size=5) | TRICKY, JSON | TRICKY | st.lists(TRICKY, max_size=2), max_size=4),
       ascii_only=st.booleans(), garble=st.sampled_from(["", "x", "]", "NaN", "1e999", "[" * 201]))
def test_metadata_text_known_clean_is_judged_as_unknown_text_is(value, ascii_only, garble):
    """A metadata text the decoder proved free of NUL and lone surrogates (`text_checked`) skips the
    per-string checks unless it holds escapes: same values, same reasons as the full walk."""
    text = json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)
    text = text[:-1] + garble + text[-1:] if garble else text
    if "\x00" in text or not is_utf8(text):
        return  # not what a strict decoder lets through
    assert metadata_outcome(lambda t: events._metadata(t, True), text) == metadata_outcome(events._metadata, text)


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
