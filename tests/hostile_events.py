"""Hostile events written at the encoding level, for the generative test of the consumers.

A hostile or buggy producer is not bound by the producer SDK's checks, nor
even by the Avro types: it may write any bytes where a string goes, any index
where an enum goes, any long where a timestamp goes. So each schema is
loosened (string -> bytes, enum -> int, timestamp-micros -> long, which
Avro encodes identically) and a record is written with the loose schema under
the real schema's header: the consumers read exactly what such a producer
could put on the topic.

`hostile_message` draws a valid task run's event, one field of it (every
field of every event schema is a candidate) and a value from a hostile class
for that field's kind; `Hostile.expect` says what must become of it when the
class decides ("dead" or "valid"), or None when only consistency is required
(both projections do the same thing with it).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from events_factory import Asset, TaskRun, Upstream, message_key, props, topic_for
from hypothesis import strategies as st

from assetlog.schemas import DEPENDENCY, EVENT_TYPES, MATERIALIZATION, METADATA, registry

UUID_FIELDS = {"event_id", "materialization_event_id", "task_run_id", "flow_run_id"}
KEY_FIELDS = {"asset_key", "upstream_key", "downstream_key", "upstream_keys"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MICROS = int((datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - EPOCH).total_seconds() * 1e6)
MIN_MICROS = int((datetime(1, 1, 1, tzinfo=UTC) - EPOCH).total_seconds() * 1e6)


@dataclass
class Hostile:
    event_type: str
    field: str  # dotted path of the field changed ("" for raw garbage)
    kind: str  # the hostile class
    topic: str
    key: bytes | None
    value: bytes
    expect: str | None  # "dead", "valid" or None (either, as long as both projections agree)

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"Hostile({self.event_type}.{self.field}: {self.kind}, expect={self.expect}, {len(self.value)} bytes)"


def versions(event_type: str) -> list[int]:
    """Every schema version of `event_type` this Assetlog reads (older writers included)."""
    return sorted(v.version for v in registry().by_fingerprint.values() if v.event_type == event_type)


@cache
def raw_schema(event_type: str, version: int | None = None) -> dict:
    writer = registry().writer(event_type, version)
    return json.loads(resources.files("assetlog.schemas").joinpath(writer.source).read_text("utf-8"))


def _loosen(schema: Any) -> Any:
    if schema == "string":
        return "bytes"
    if isinstance(schema, list):
        return [_loosen(s) for s in schema]
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "enum":
            return "int"
        if kind == "long" and schema.get("logicalType") == "timestamp-micros":
            return "long"
        if kind == "record":
            return {**schema, "name": f"Loose{schema['name']}",
                    "fields": [{"name": f["name"], "type": _loosen(f["type"])} for f in schema["fields"]]}
        if kind == "array":
            return {**schema, "items": _loosen(schema["items"])}
        return {**schema, "type": _loosen(kind)}
    return schema


@cache
def loose_schema(event_type: str, version: int | None = None) -> Any:
    return fastavro.parse_schema(_loosen(raw_schema(event_type, version)), named_schemas={})


def leaves(schema: Any, path: str = "") -> list[tuple[str, str]]:
    """(dotted path, kind) of every field: string, enum, timestamp, int, array, record."""
    if isinstance(schema, list):
        found = []
        for branch in schema:
            if branch != "null":
                found += leaves(branch, path)
        return found + ([(path, "nullable")] if "null" in schema else [])
    if isinstance(schema, str):
        return [(path, {"string": "string", "int": "int", "long": "int"}.get(schema, schema))]
    kind = schema["type"]
    if kind == "record":
        return [leaf for f in schema["fields"] for leaf in leaves(f["type"], f"{path}.{f['name']}" if path
                                                                   else f["name"])]
    if kind == "array":
        return [(path, "array"), *leaves(schema["items"], f"{path}.*")]
    if kind == "enum":
        return [(path, "enum")]
    if kind == "long" and schema.get("logicalType") == "timestamp-micros":
        return [(path, "timestamp")]
    return leaves(kind, path)


def loose_value(value: Any, schema: Any) -> Any:
    """A decoded-style record value in the loose schema's form."""
    if value is None:
        return None
    if isinstance(schema, list):
        branch = next(b for b in schema if b != "null")
        return loose_value(value, branch)
    if schema == "string":
        return value.encode("utf-8")
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: loose_value(value.get(f["name"]), f["type"]) for f in schema["fields"]}
        if kind == "array":
            return [loose_value(v, schema["items"]) for v in value]
        if kind == "enum":
            return schema["symbols"].index(value)
        if kind == "long" and schema.get("logicalType") == "timestamp-micros":
            return int((value - EPOCH).total_seconds() * 1_000_000)
    return value


def encode_loose(event_type: str, record: dict, version: int | None = None) -> bytes:
    buffer = io.BytesIO()
    buffer.write(registry().writer(event_type, version).header)
    fastavro.schemaless_writer(buffer, loose_schema(event_type, version), record)
    return buffer.getvalue()


def base_events() -> dict[str, dict]:
    """One event of each type with every optional field filled."""
    run = TaskRun([Asset("s3://hostile/a.csv", props("A", "about a", ["team"], "https://a"))],
                  [Upstream("s3://hostile/up.csv", "EXPLICIT", props("Up", owners=["o"]))],
                  metadata={"s3://hostile/a.csv": {"rows": 1, "nested": {"x": [1, "y"]}}}, by="dbt",
                  error=("ValueError", "boom"), task_name="t", flow_name="f")
    return dict(run.events())


# --- hostile classes per kind: (class name, loose value or a function of the base value, expectation) -------

def _text_classes(category: str) -> st.SearchStrategy[tuple[str, Any, str | None]]:
    key, uuid = category == "key", category == "uuid"
    classes = [
        st.tuples(st.just("nul"), st.sampled_from([b"\x00", b"a\x00b"]).map(lambda b: ("suffix", b)), st.just("dead")),
        st.tuples(st.just("control"), st.sampled_from([b"\x01\x1b[31m\x7f", b"\x08\x0b\x0c", b"\xc2\x85"]).map(
            lambda b: ("suffix", b)), st.just("dead" if uuid else None if key else "valid")),
        st.tuples(st.just("tab-newline"), st.sampled_from([b"\t", b"\n", b"\r\n"]).map(lambda b: ("suffix", b)),
                  st.just("dead" if key or uuid else "valid")),
        st.tuples(st.just("bidi"), st.sampled_from(["\u202e", "\u2066\u202d", "\u200f\u061c"]).map(
            lambda t: ("suffix", t.encode())), st.just("dead" if uuid else "valid")),
        st.tuples(st.just("lone-surrogate"), st.sampled_from(["\ud800", "\udfff", "a\udc80b"]).map(
            lambda t: ("suffix", t.encode("utf-8", "surrogatepass"))), st.just("dead")),
        st.tuples(st.just("invalid-utf8"), st.sampled_from([b"\xff\xfe", b"\xc3", b"\xe2\x82"]).map(
            lambda b: ("suffix", b)), st.just("dead")),
        st.tuples(st.just("empty"), st.just(("replace", b"")), st.just("dead" if key or uuid else "valid")),
        st.tuples(st.just("random-text"), st.text(max_size=40).map(lambda t: ("suffix", t.encode("utf-8", "surrogatepass"))),
                  st.none()),
    ]
    if key:
        classes += [
            st.tuples(st.just("key-at-limit"), st.just(("replace", ("s3://" + "k" * 507).encode())), st.just("valid")),
            st.tuples(st.just("key-over-limit"), st.just(("replace", ("s3://" + "k" * 508).encode())), st.just("dead")),
            st.tuples(st.just("key-multibyte-at-limit"), st.just(("replace", ("s3://" + "😀" * 507).encode())),
                      st.none()),
            st.tuples(st.just("key-no-scheme"), st.just(("replace", b"no-scheme/x")), st.just("dead")),
        ]
    elif uuid:
        classes += [
            st.tuples(st.just("uuid-invalid"), st.sampled_from([b"not-a-uuid", b"{12345678-1234-1234-1234-123456789abc}",
                                                               b"12345678123412341234123456789abc"]).map(
                lambda b: ("replace", b)), st.just("dead")),
            st.tuples(st.just("uuid-uppercase"), st.just(("upper", None)), st.just("valid")),
        ]
    else:
        classes += [
            st.tuples(st.just("huge"), st.sampled_from([2500, 2501, 100_000]).map(
                lambda n: ("replace", ("é" * n).encode())), st.just("dead" if category == "owner" else "valid")),
            st.tuples(st.just("owner-limit"), st.sampled_from([1000, 1001]).map(lambda n: ("replace", b"o" * n)),
                      st.just(None if category != "owner" else "x")),
        ]
    return st.one_of(classes)


def _metadata_classes() -> st.SearchStrategy[tuple[str, Any, str | None]]:
    def nested(depth: int) -> bytes:
        return ('{"a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}").encode()

    return st.one_of(
        st.tuples(st.just("deep-json"), st.sampled_from([200, 201, 5000, 100_000]).map(
            lambda d: (("replace", nested(d)), "valid" if d <= 200 else "dead")), st.none()),
        st.tuples(st.just("huge-json"), st.just(("replace", json.dumps({"blob": "x" * 300_000}).encode())),
                  st.just("valid")),
        st.tuples(st.just("jsonb-nul-escape"), st.sampled_from([b'{"a": "\\u0000"}', b'{"\\u0000": 1}']).map(
            lambda b: ("replace", b)), st.just("dead")),
        st.tuples(st.just("json-lone-surrogate"), st.just(("replace", b'{"a": "\\ud800"}')), st.just("dead")),
        st.tuples(st.just("json-not-object"), st.sampled_from([b"[]", b"1", b'"x"', b"null"]).map(
            lambda b: ("replace", b)), st.just("dead")),
        st.tuples(st.just("json-non-finite"), st.sampled_from([b'{"a": NaN}', b'{"a": 1e999}', b'{"a": -Infinity}']).map(
            lambda b: ("replace", b)), st.just("dead")),
        st.tuples(st.just("json-huge-int"), st.sampled_from([400, 5000]).map(
            lambda n: (("replace", b'{"a": 1' + b"0" * n + b"}"), "valid" if n < 4000 else "dead")), st.none()),
        st.tuples(st.just("json-escapes"), st.just(("replace", b'{"a\\"b": "\\u202e\\t\\u0001\\\\u0000"}')),
                  st.just("valid")),
        st.tuples(st.just("not-json"), st.sampled_from([b"{oops", b"", b"{'a': 1}"]).map(lambda b: ("replace", b)),
                  st.just("dead")),
    )


def _mutation(kind: str, path: str) -> st.SearchStrategy[tuple[str, Any, str | None]]:
    name = path.split(".")[-1] if not path.endswith("*") else path.split(".")[-2]
    if path == "metadata_json":
        return _metadata_classes()
    if kind == "string":
        category = "uuid" if name in UUID_FIELDS else "key" if name in KEY_FIELDS else \
            "owner" if name == "owners" else "text"
        return _text_classes(category)
    if kind == "enum":
        # fastavro reads a negative index from the end of the symbols (-1: the last one), so -1 and -2
        # decode as legitimate symbols: harmless (what a producer could write anyway), but not "dead".
        return st.one_of(
            st.tuples(st.just("unknown-enum"), st.sampled_from([2, 3, 100, -3]).map(lambda i: ("replace", i)),
                      st.just("dead")),
            st.tuples(st.just("negative-enum"), st.sampled_from([-1, -2]).map(lambda i: ("replace", i)),
                      st.just("valid")))
    if kind == "timestamp":
        return st.tuples(st.just("extreme-time"), st.sampled_from(
            [0, -1, MIN_MICROS, MAX_MICROS, MAX_MICROS + 1, MIN_MICROS - 1, 2**63 - 1, -(2**63)]).map(
            lambda t: ("replace", t)), st.none())
    if kind == "int":
        return st.tuples(st.just("extreme-int"), st.sampled_from([0, -1, 2**31 - 1, -(2**31)]).map(
            lambda i: ("replace", i)), st.just("valid"))
    if kind == "array":
        return st.tuples(st.just("array-size"), st.sampled_from([0, 2000]).map(lambda n: ("resize", n)), st.none())
    if kind == "nullable":
        return st.tuples(st.just("null"), st.just(("replace", None)), st.none())
    raise AssertionError(f"no hostile classes for {kind} at {path}")


def _apply(record: dict, path: str, mutation: tuple[str, Any]) -> None:
    """Change the field at `path` (`*`: every item of an array) of a loose record in place."""
    how, value = mutation
    *parents, last = path.split(".")
    targets = [record]
    for part in parents:
        nxt = []
        for target in targets:
            item = target[part] if part != "*" else None
            if part == "*":
                nxt += [t for t in target]
            elif item is not None:
                nxt.append(item)
        targets = nxt
    for target in targets:
        if last == "*":
            indexes = range(len(target))
            for i in indexes:
                target[i] = _changed(target[i], how, value)
        elif isinstance(target, dict) and last in target:
            target[last] = _changed(target[last], how, value)


def _changed(current: Any, how: str, value: Any) -> Any:
    if how == "replace":
        return value
    if how == "suffix":
        return (current or b"") + value
    if how == "upper":
        return current.upper() if isinstance(current, bytes) else current
    if how == "resize":
        return [] if value == 0 else (list(current or [b"s3://hostile/x"]) * value)[:value]
    raise AssertionError(how)


@st.composite
def hostile_message(draw: st.DrawFn, settings: Any) -> Hostile:
    """One hostile message: a field of an event changed to a hostile value, or raw garbage bytes."""
    if draw(st.integers(0, 9)) == 0:
        value = draw(st.binary(min_size=0, max_size=200))
        topic = draw(st.sampled_from(list(settings.topics.events)))
        return Hostile("raw", "", "garbage-bytes", topic, b"s3://hostile/raw", value, "dead")
    event_type = draw(st.sampled_from(EVENT_TYPES))
    version = draw(st.sampled_from(versions(event_type)))  # an older writer's layout too
    record = base_events()[event_type]
    schema = raw_schema(event_type, version)
    loose = loose_value(record, schema)
    path, kind = draw(st.sampled_from(leaves(schema)))
    drawn = draw(_mutation(kind, path))
    name, mutation, expect = drawn
    if isinstance(mutation[0], tuple):  # (mutation, expectation) drawn together
        mutation, expect = mutation
    if name == "owner-limit":
        expect = ("valid" if mutation[1] == b"o" * 1000 else "dead") if path.endswith("owners.*") else "valid"
    if name == "array-size" and path.endswith("owners") and mutation[1]:
        expect = None
    _apply(loose, path, mutation)
    return Hostile(f"{event_type}.v{version}", path, name, topic_for(settings, event_type),
                   message_key(event_type, record), encode_loose(event_type, loose, version), expect)


def known_wedges(settings: Any) -> list[Hostile]:
    """The messages that wedged both consumers before issue 11 (always tried first, as explicit
    examples): a NUL in asset_key and in upstream_key, metadata nested 100,000 levels, and a
    dependency whose keys are too long to index together."""
    events = base_events()
    found = []
    for event_type, path, value, kind in (
        (MATERIALIZATION, "asset_key", b"s3://hostile/nul\x00.csv", "nul"),
        (DEPENDENCY, "upstream_key", b"s3://hostile/up\x00.csv", "nul"),
        (METADATA, "metadata_json", ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(), "deep-json"),
        (DEPENDENCY, "downstream_key", ("s3://" + "\U0001F600" * 400).encode(), "key-pair-over-index-limit"),
    ):
        record = loose_value(events[event_type], raw_schema(event_type))
        _apply(record, path, ("replace", value))
        if kind == "key-pair-over-index-limit":
            _apply(record, "upstream_key", ("replace", ("s3://" + "\U0001F680" * 400).encode()))
        found.append(Hostile(event_type, path, kind, topic_for(settings, event_type),
                             message_key(event_type, events[event_type]), encode_loose(event_type, record), "dead"))
    return found


def valid_traffic(index: int) -> list[tuple[str, dict]]:
    """A valid task run, distinct per index."""
    key = f"s3://hostile/valid/{index}.csv"
    return TaskRun([Asset(key, props(f"v{index}"))], [f"s3://hostile/valid/{index - 1}.csv"],
                   metadata={key: {"i": index}}).events()


__all__ = ["Hostile", "hostile_message", "known_wedges", "valid_traffic"]
