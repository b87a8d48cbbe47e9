"""The compiled Avro reader (schemas/_avro_reader.c) reads and refuses exactly what the generated Python
reader does, and never accepts what fastavro refuses.

Event by event, on random valid events of every shipped schema version and on random and mutated
bytes: the C reader and the generated Python reader of the same writer schema either both raise or
return equal records with values of the same types; whatever the C reader returns, fastavro returns
too; whatever fastavro refuses, the C reader refuses. Then one hand-written case per refusal rule,
each beside the nearest value that is accepted. No broker or database: decoding is pure.

The extension must be built here (`pip install -e .` compiles it): a build that silently fell back to
Python would otherwise pass. `ASSETLOG_ALLOW_PURE_PYTHON=1` allows its absence (docs/development.md).
"""

from __future__ import annotations

import io
import os
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_specialised_decoder import VERSIONS, drawn_event, mutated, strings

from assetlog.schemas import registry
from assetlog.schemas.codec import HEADER_LENGTH
from assetlog.schemas.compiled import READER_KIND, compiled_reader
from assetlog.schemas.specialised import compile_reader, program

ALLOW_PURE_PYTHON = os.environ.get("ASSETLOG_ALLOW_PURE_PYTHON") == "1"
pytestmark = pytest.mark.skipif(READER_KIND != "compiled" and ALLOW_PURE_PYTHON,
                                reason="ASSETLOG_ALLOW_PURE_PYTHON=1 and the C extension is not built")
FAST = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_the_c_extension_is_built_and_used_by_the_registry():
    try:
        import assetlog.schemas._avro_reader as extension  # inside: its absence is what is tested
    except ImportError as exc:
        pytest.fail(f"the C extension is not built ({exc}): reinstall with `pip install -e .` (`./dev test` "
                    "does), or set ASSETLOG_ALLOW_PURE_PYTHON=1 where no C compiler is wanted")
    assert READER_KIND == "compiled"
    for fingerprint, (_type, read, _appended) in registry()._specialised.items():
        assert isinstance(read, extension.Reader), registry().by_fingerprint[fingerprint].source


@cache
def readers(source: str) -> tuple[Any, Any]:
    """The C and the generated Python reader of a shipped writer schema (built when first asked for, so a
    missing extension fails the tests, not their collection)."""
    (version,) = [v for v in VERSIONS if v.source == source]
    c_read, py_read = compiled_reader(version.schema), compile_reader(version.schema, version.source)
    assert c_read is not None and py_read is not None
    return c_read, py_read


def typed(value: Any) -> Any:
    """`value` with the type of every part spelled out: 1 and True, or str and an enum, must not pass as equal."""
    if isinstance(value, dict):
        return ("dict", [(key, typed(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), value.tzinfo is UTC)
    return (type(value).__name__, value)


def outcome(read, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", typed(read(data, HEADER_LENGTH))
    except Exception as exc:  # the readers' contract: anything unusual raises, whatever the type
        return "refused", type(exc).__name__


def fastavro_outcome(schema: Any, data: bytes) -> tuple[str, Any]:
    """fastavro's reading of the body, with the trailing-bytes rule of `decode_generic`."""
    buffer = io.BytesIO(data)
    buffer.seek(HEADER_LENGTH)
    try:
        record = fastavro.schemaless_reader(buffer, schema, None)
    except Exception as exc:
        return "refused", type(exc).__name__
    if buffer.tell() != len(data):
        return "refused", "trailing bytes"
    return "ok", typed(record)


def same_everywhere(version: Any, data: bytes) -> str:
    """Compare the C reader with the Python one and with fastavro on `data`; returns the C outcome."""
    c_read, py_read = readers(version.source)
    c_result = outcome(c_read, data)
    py_result = outcome(py_read, data)
    assert (c_result[0], c_result[1] if c_result[0] == "ok" else None) == \
           (py_result[0], py_result[1] if py_result[0] == "ok" else None)
    fast = fastavro_outcome(version.schema, data)
    if c_result[0] == "ok":
        assert fast == c_result
    if fast[0] == "refused":
        assert c_result[0] == "refused"
    return c_result[0]


@FAST
@given(data=st.data())
def test_random_valid_events_read_the_same_in_c_python_and_fastavro(data):
    version, record, encoded = drawn_event(data)
    has_nul = any("\x00" in text for text in strings(record))
    # a NUL is refused by both specialised readers and left to fastavro and validation
    assert same_everywhere(version, encoded) == ("refused" if has_nul else "ok")


@FAST
@given(data=st.data())
def test_mutated_events_are_refused_or_read_alike(data):
    version, _record, encoded = drawn_event(data)
    same_everywhere(version, mutated(data, bytearray(encoded)))


@FAST
@given(version=st.sampled_from(VERSIONS), body=st.binary(max_size=160))
def test_random_bytes_are_refused_or_read_alike(version, body):
    same_everywhere(version, version.header + body)


# One case per refusal rule, beside a body that differs only in what the rule judges and is accepted. fastavro
# accepts some of the refused bodies (an int beyond 32 bits, a negative array count, ...): the
# specialised readers refuse whatever is unusual and leave the judgement to it (`decode_checked`).
LONG, INT, STRING = "long", "int", "string"
TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}
ENUM = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
UNION = ["null", "string"]
ARRAY = {"type": "array", "items": "long"}
RECORD = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "string"}]}


def zigzag(value: int) -> bytes:
    """The Avro varint of `value` (any size: the readers must refuse what does not fit)."""
    unsigned = (value << 1) ^ (value >> 70) if value < 0 else value << 1
    out = bytearray()
    while True:
        byte, unsigned = unsigned & 0x7F, unsigned >> 7
        out.append(byte | (0x80 if unsigned else 0))
        if not unsigned:
            return bytes(out)


def text(raw_bytes: bytes) -> bytes:
    return zigzag(len(raw_bytes)) + raw_bytes


MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
REFUSALS = {  # rule: (schema, body refused, body accepted, what the C reader says)
    "NUL in a string": (STRING, text(b"a\x00b"), text(b"a b"), "NUL in a string"),
    "invalid UTF-8": (STRING, text(b"\xc3\x28"), text(b"\xc3\xa9"), "UnicodeDecodeError"),
    "overlong UTF-8": (STRING, text(b"\xc0\xaf"), text(b"/"), "UnicodeDecodeError"),
    "lone surrogate": (STRING, text(b"\xed\xa0\x80"), text("\U00010000".encode()), "UnicodeDecodeError"),
    "string length negative": (STRING, zigzag(-1), zigzag(0), "string length"),
    "string length past the end": (STRING, zigzag(4) + b"abc", zigzag(3) + b"abc", "string length"),
    "varint longer than 10 bytes": (LONG, b"\x80" * 10 + b"\x00", b"\x80" * 9 + b"\x00", "longer than 10 bytes"),
    "varint of 2**64": (LONG, b"\xff" * 9 + b"\x02", b"\xff" * 9 + b"\x01", "beyond 64 bits"),
    "int above 32 bits": (INT, zigzag(2**31), zigzag(2**31 - 1), "int out of range"),
    "int below 32 bits": (INT, zigzag(-(2**31) - 1), zigzag(-(2**31)), "int out of range"),
    "enum index negative": (ENUM, zigzag(-1), zigzag(0), "enum index"),
    "enum index past the symbols": (ENUM, zigzag(3), zigzag(2), "enum index"),
    "union index 2": (UNION, zigzag(2), zigzag(1) + text(b"x"), "union index"),
    "union index -1": (UNION, zigzag(-1), zigzag(0), "union index"),
    "array block with a negative count": (ARRAY, zigzag(-1) + zigzag(1) + zigzag(5) + zigzag(0),
                                          zigzag(1) + zigzag(5) + zigzag(0), "array block with a size"),
    "array count past the end": (ARRAY, zigzag(3) + zigzag(5) + zigzag(0), zigzag(1) + zigzag(5) + zigzag(0),
                                 "array count past the end"),
    "trailing bytes": (RECORD, zigzag(1) + text(b"x") + b"\x00", zigzag(1) + text(b"x"), "trailing bytes"),
    "truncated": (RECORD, zigzag(1), zigzag(1) + text(b""), "truncated at byte 11"),
    "truncated varint": (LONG, b"\x80\x80", b"\x80\x00", "truncated at byte 12"),
    "empty body": (RECORD, b"", zigzag(0) + zigzag(0), "truncated at byte 10"),
    "datetime after year 9999": (TIMESTAMP, zigzag(MAX_MICROS + 1), zigzag(MAX_MICROS), "OverflowError: date value"),
    "datetime before year 1": (TIMESTAMP, zigzag(MIN_MICROS - 1), zigzag(MIN_MICROS), "OverflowError: date value"),
}


@pytest.mark.parametrize("rule", sorted(REFUSALS))
def test_each_refusal_rule_refuses_in_c_and_python_and_accepts_its_neighbour(rule):
    schema, refused, accepted, c_error = REFUSALS[rule]
    parsed = fastavro.parse_schema(schema)
    c_read, py_read = compiled_reader(parsed), compile_reader(parsed)
    header = bytes(HEADER_LENGTH)
    with pytest.raises(Exception) as refusal:  # any type: its name is part of the message checked
        c_read(header + refused, HEADER_LENGTH)
    assert re.search(c_error, f"{refusal.type.__name__}: {refusal.value}"), (rule, refusal.value)
    assert outcome(py_read, header + refused)[0] == "refused", rule
    assert outcome(c_read, header + accepted)[0] == "ok", rule
    assert outcome(c_read, header + accepted) == outcome(py_read, header + accepted)
    assert outcome(c_read, header + accepted) == fastavro_outcome(parsed, header + accepted)


@FAST
@given(micros=st.integers(-(2**63), 2**63 - 1) | st.integers(MIN_MICROS - 10**11, MIN_MICROS + 10**11)
       | st.integers(MAX_MICROS - 10**11, MAX_MICROS + 10**11) | st.integers(-(10**17), 10**17))
@example(micros=0)
@example(micros=-1)
@example(micros=-86_400_000_000)
@example(micros=951_782_400_000_000)  # 2000-02-29
def test_timestamps_convert_as_python_adds_a_timedelta_to_the_epoch(micros):
    data = bytes(HEADER_LENGTH) + zigzag(micros)
    parsed = fastavro.parse_schema(TIMESTAMP)
    c_read, py_read = compiled_reader(parsed), compile_reader(parsed)
    assert outcome(c_read, data) == outcome(py_read, data)


@pytest.mark.parametrize("bad", [("nothing",), "record", ("union", 2, ("null",)), ("enum", ["A"]),
                                 ("record", ("a", "b"), (("long",),)), ("array",)])
def test_a_malformed_program_is_refused_when_the_reader_is_built(bad):
    from assetlog.schemas._avro_reader import Reader  # inside: absent with ASSETLOG_ALLOW_PURE_PYTHON

    with pytest.raises(ValueError, match="not a reading program"):
        Reader(bad)


def test_the_reader_interprets_the_program_of_its_schema():
    for version in VERSIONS:
        assert readers(version.source)[0].program == program(version.schema)
