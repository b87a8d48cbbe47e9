"""Fast Avro single-object encoding of the producer's events.

`fastavro.schemaless_writer` costs about 12 us per event, several times a raw
Kafka `produce()`. The producer's events have a small, fixed set of shapes, so
each writer schema is compiled once into straight-line Python that appends
byte strings; nested records shared by all events of a task run (`run`,
`producer`) are encoded once per batch through a memo keyed by object id.

The output is byte-for-byte what `assetlog.schemas.encode` writes (a test checks
it on random records); any schema construct the compiler does not know makes
`encoder_for` fall back to that generic encoder, so a new schema version can
never be written wrongly, only more slowly.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from assetlog.schemas import registry

Encoder = Callable[[Mapping[str, Any], dict[int, bytes]], bytes]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_ONE_BYTE = [bytes([i]) for i in range(128)]  # varints below 128
_SMALL = [bytes([i << 1]) for i in range(64)]  # zigzag of 0..63 (string lengths, counts)


class UnsupportedSchema(Exception):
    """The schema uses a construct this compiler does not handle."""


def write_long(n: int) -> bytes:
    """Avro long: zigzag, then a little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    return _ONE_BYTE[n] if n < 128 else varint(n)


def varint(n: int) -> bytes:
    """An unsigned little-endian base-128 varint (Avro's long after zigzag)."""
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def micros(value: Any) -> int:
    """timestamp-micros from an int or an aware datetime (naive means UTC, as in fastavro)."""
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


class _Compiler:
    """Turns one parsed Avro schema into Python source, one function per record type."""

    def __init__(self) -> None:
        self.functions: dict[str, str] = {}  # record full name -> generated function name
        self.sources: list[str] = []
        self.constants: dict[str, Any] = {}
        self.named: dict[str, Any] = {}
        self._counter = 0

    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def record_function(self, schema: Mapping[str, Any]) -> str:
        name = schema["name"]
        if name in self.functions:
            return self.functions[name]
        function = self.fresh("_record")
        self.functions[name] = function
        self.named[name] = schema
        lines = [f"def {function}(r, memo):", "    parts = []", "    add = parts.append"]
        for field in schema["fields"]:
            value = self.fresh("v")
            if "default" in field:
                default = self.constant(field["default"])
                lines.append(f"    {value} = r.get({field['name']!r}, {default})")
            else:
                lines.append(f"    {value} = r[{field['name']!r}]")
            lines.extend(self.value(field["type"], value, "    "))
        lines.append("    return b''.join(parts)")
        self.sources.append("\n".join(lines))
        return function

    def constant(self, value: Any) -> str:
        name = self.fresh("_c")
        self.constants[name] = value
        return name

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema in self.named:
            return self.named[schema]
        return schema

    def value(self, schema: Any, var: str, indent: str) -> list[str]:
        schema = self.resolve(schema)
        if isinstance(schema, Mapping) and schema.get("type") in _PRIMITIVES and not schema.get("logicalType"):
            schema = schema["type"]  # {"type": "string"} is just "string"
        kind = schema if isinstance(schema, str) else ("union" if isinstance(schema, list) else schema["type"])
        if kind == "null":
            return []
        if kind == "string":
            b = self.fresh("b")
            n = self.fresh("n")
            return [f"{indent}{b} = {var}.encode()", f"{indent}{n} = len({b})",
                    f"{indent}add(_SMALL[{n}] if {n} < 64 else write_long({n}))", f"{indent}add({b})"]
        if kind == "bytes":
            n = self.fresh("n")
            return [f"{indent}{n} = len({var})",
                    f"{indent}add(_SMALL[{n}] if {n} < 64 else write_long({n}))", f"{indent}add(bytes({var}))"]
        if kind in ("int", "long"):
            if isinstance(schema, Mapping) and schema.get("logicalType") == "timestamp-micros":
                return [f"{indent}add(write_long(micros({var})))"]
            if isinstance(schema, Mapping) and schema.get("logicalType"):
                raise UnsupportedSchema(f"logical type {schema['logicalType']}")
            return [f"{indent}add(write_long({var}))"]
        if kind == "boolean":
            return [f"{indent}add(b'\\x01' if {var} else b'\\x00')"]
        if kind == "enum":
            self.named[schema["name"]] = schema
            table = self.constant({symbol: write_long(i) for i, symbol in enumerate(schema["symbols"])})
            return [f"{indent}add({table}[{var}])"]
        if kind == "array":
            item = self.fresh("i")
            n = self.fresh("n")
            body = self.value(schema["items"], item, indent + "        ")
            return [f"{indent}{n} = len({var})",
                    f"{indent}if {n}:",
                    f"{indent}    add(_SMALL[{n}] if {n} < 64 else write_long({n}))",
                    f"{indent}    for {item} in {var}:",
                    *(body or [f"{indent}        pass"]),
                    f"{indent}add(b'\\x00')"]
        if kind == "record":
            function = self.record_function(schema)
            key, cached = self.fresh("k"), self.fresh("e")
            return [f"{indent}{key} = id({var})",
                    f"{indent}{cached} = memo.get({key})",
                    f"{indent}if {cached} is None:",
                    f"{indent}    {cached} = memo[{key}] = {function}({var}, memo)",
                    f"{indent}add({cached})"]
        if kind == "union":
            branches = [self.resolve(b) for b in schema]
            if len(branches) != 2 or "null" not in branches:
                raise UnsupportedSchema("only unions of null and one other type are compiled")
            null_index = branches.index("null")
            other = branches[1 - null_index]
            return [f"{indent}if {var} is None:",
                    f"{indent}    add({write_long(null_index)!r})",
                    f"{indent}else:",
                    f"{indent}    add({write_long(1 - null_index)!r})",
                    *(self.value(other, var, indent + "    ") or [f"{indent}    pass"])]
        raise UnsupportedSchema(f"type {kind!r}")


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def compile_encoder(schema: Mapping[str, Any], header: bytes) -> Encoder:
    """Compile `schema` (a record) into `encode(record, memo) -> header + body`."""
    if not isinstance(schema, Mapping) or schema.get("type") != "record":
        raise UnsupportedSchema("the top-level schema must be a record")
    compiler = _Compiler()
    top = compiler.record_function(schema)
    namespace: dict[str, Any] = {"write_long": write_long, "micros": micros, "_SMALL": _SMALL}
    namespace.update(compiler.constants)
    source = "\n\n".join(compiler.sources)
    exec(compile(source, f"<assetlog encoder {schema['name']}>", "exec"), namespace)
    body = namespace[top]

    def encode(record: Mapping[str, Any], memo: dict[int, bytes]) -> bytes:
        return header + body(record, memo)

    encode.source = source  # type: ignore[attr-defined]  # for debugging a mismatch
    return encode


@cache
def encoder_for(event_type: str) -> Encoder:
    """The fastest correct encoder for the newest schema of `event_type`."""
    writer = registry().writer(event_type)
    try:
        return compile_encoder(writer.schema, writer.header)
    except UnsupportedSchema:
        generic = registry().encode

        def encode(record: Mapping[str, Any], memo: dict[int, bytes]) -> bytes:
            return generic(event_type, record)

        return encode


def is_compiled(event_type: str) -> bool:
    """True when `event_type` uses the compiled encoder (tests pin this)."""
    return hasattr(encoder_for(event_type), "source")
