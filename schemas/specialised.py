"""Avro readers generated once per writer schema: straight-line Python for the hot path.

fastavro's `schemaless_reader` walks the schema for every message (a dispatch
on each field's type, plus its own set-up per call): on the consumers'
profile it was a third of the CPU per event. Our schemas are small and fixed,
so each writer schema is turned once into one Python function that reads its
fields in order, with the varints, strings, unions and enums written out
inline.

The generated reader is deliberately strict and knows no error reporting: on
anything unusual (a truncated body, an unknown union branch, an int out of
range, trailing bytes, a NUL character in a string...) it raises, and `SchemaRegistry.decode` then decodes
the same bytes with fastavro, which names the problem exactly as before (or
accepts what fastavro accepts). So the generated code can only ever be faster,
never change a result. What it does accept is known to hold no NUL character
in any string (which PostgreSQL text cannot store; strict UTF-8 decoding
already excludes lone surrogates), so validation need not look again
(`SchemaRegistry.decode_checked`): `tests/test_specialised_decoder.py` checks it against
fastavro, event by event, on random valid events of every schema and on
random and mutated bytes.

Supported: records, string, int, long (and timestamp-micros), enum, arrays,
and unions of null with one other type: what the shipped schemas use. A schema
with anything else gets no specialised reader (`compile_reader` returns None)
and is decoded by fastavro alone.

The schema is first turned into a reading program (`program`: plain tuples);
the Python source is written from it, and the compiled C reader
(`_avro_reader.c`, chosen by `compiled.py` when it was built) interprets the
same program with the same rules, so this module stays the readable reference.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

Reader = Callable[[bytes, int], dict[str, Any]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


class Unsupported(Exception):
    """The schema uses a type the generator does not write code for."""


class NotPlain(Exception):
    """The bytes need fastavro's judgement (raised by generated readers, never shown to users)."""


def _varint_tail(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte had its continuation bit; at most 10 bytes in all and a
    value below 2**64, as fastavro reads it (anything longer is left to fastavro)."""
    value = first & 0x7F
    shift = 7
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise NotPlain("varint longer than 10 bytes")
    if value >> 64:
        raise NotPlain("varint beyond 64 bits")
    return value, pos


Program = tuple[Any, ...]


def program(schema: Any) -> Program:
    """The reading program of `schema` (fastavro's parsed form): a tree of plain tuples, one per value,
    whose first item names the operation: `("record", names, fields)`, `("enum", symbols)`,
    `("array", item)`, `("union", null_index, other)`, `("string",)`, `("int",)`, `("long",)`,
    `("timestamp-micros",)`, `("null",)`. Raises `Unsupported` for anything else.

    It is the one place that decides what a specialised reader supports and how each type reads; both
    readers are built from it: `compile_reader` writes Python source, and the C extension
    (`_avro_reader.Reader`, via `compiled.py`) interprets it."""
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            raise Unsupported("unions other than null and one type")
        null_index = schema.index("null")
        return ("union", null_index, program(schema[1 - null_index]))
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            fields = schema["fields"]
            return ("record", tuple(f["name"] for f in fields), tuple(program(f["type"]) for f in fields))
        if kind == "enum":
            return ("enum", tuple(schema["symbols"]))
        if kind == "array":
            return ("array", program(schema["items"]))
        if kind == "long" and schema.get("logicalType") == "timestamp-micros":
            return ("timestamp-micros",)
        if kind in _PRIMITIVES and set(schema) <= {"type", "__fastavro_parsed", "__named_schemas"}:
            return program(kind)
        raise Unsupported(f"type {kind!r}")
    if schema in _PRIMITIVES:
        return (schema,)
    raise Unsupported(f"type {schema!r}")


_PRIMITIVES = ("string", "int", "long", "null")


class _Writer:
    """Emits the body of one reader function: one local per value, `pos` the read position."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, indent: int, target: str) -> None:
        """target = the next zigzag varint."""
        self.emit(indent, "b = data[pos]; pos += 1")
        self.emit(indent, "if b & 0x80: b, pos = _varint_tail(data, pos, b)")
        self.emit(indent, f"{target} = (b >> 1) ^ -(b & 1)")

    def value(self, step: Program, indent: int, target: str) -> None:
        """Code that reads one value of the program `step` into the local `target`."""
        op = step[0]
        if op == "record":
            self._record(step[1], step[2], indent, target)
        elif op == "enum":
            symbols = self.name("symbols")
            self.constants[symbols] = step[1]
            self.long(indent, "i")
            self.emit(indent, "if i < 0: raise NotPlain('enum index')")
            self.emit(indent, f"{target} = {symbols}[i]")
        elif op == "array":
            self._array(step[1], indent, target)
        elif op == "union":
            self._union(step[1], step[2], indent, target)
        elif op == "timestamp-micros":
            self.long(indent, "v")
            self.emit(indent, f"{target} = _EPOCH + _timedelta(microseconds=v)")
        elif op == "string":
            self.long(indent, "n")
            self.emit(indent, "end = pos + n")
            self.emit(indent, "if n < 0 or end > size: raise NotPlain('string length')")
            self.emit(indent, f"{target} = data[pos:end].decode(); pos = end")
            self.emit(indent, f"if '\\x00' in {target}: raise NotPlain('NUL')")
        elif op == "long":
            self.long(indent, target)
        elif op == "int":
            self.long(indent, target)
            self.emit(indent, f"if not _INT_MIN <= {target} <= _INT_MAX: raise NotPlain('int range')")
        elif op == "null":
            self.emit(indent, f"{target} = None")
        else:
            raise Unsupported(f"operation {op!r}")

    def _record(self, names: tuple[str, ...], fields: tuple[Program, ...], indent: int, target: str) -> None:
        items = []
        for name, field in zip(names, fields, strict=True):
            local = self.name("f")
            self.value(field, indent, local)
            items.append(f"{name!r}: {local}")
        self.emit(indent, f"{target} = {{{', '.join(items)}}}")

    def _union(self, null_index: int, other: Program, indent: int, target: str) -> None:
        self.long(indent, "i")
        self.emit(indent, f"if i == {null_index}: {target} = None")
        self.emit(indent, f"elif i == {1 - null_index}:")
        self.value(other, indent + 1, target)
        self.emit(indent, "else: raise NotPlain('union index')")

    def _array(self, item_step: Program, indent: int, target: str) -> None:
        items = self.name("items")
        self.emit(indent, f"{items} = []")
        count = self.name("count")
        self.emit(indent, "while True:")
        self.long(indent + 1, count)
        self.emit(indent + 1, f"if {count} == 0: break")
        self.emit(indent + 1, f"if {count} < 0: raise NotPlain('array block with a size')")
        self.emit(indent + 1, f"for _ in range({count}):")
        item = self.name("item")
        self.value(item_step, indent + 2, item)
        self.emit(indent + 2, f"{items}.append({item})")
        self.emit(indent, f"{target} = {items}")


def reader_source(schema: Any, function: str = "read") -> tuple[str, dict[str, Any]]:
    """The Python source of a reader for `schema` (fastavro's parsed form), and the constants it uses."""
    writer = _Writer()
    writer.emit(1, "size = len(data)")
    writer.value(program(schema), 1, "record")
    writer.emit(1, "if pos != size: raise NotPlain('trailing bytes')")
    writer.emit(1, "return record")
    source = f"def {function}(data, pos):\n" + "\n".join(writer.lines) + "\n"
    return source, writer.constants


def compile_reader(schema: Any, label: str = "schema") -> Reader | None:
    """A function `(data, start) -> record` reading the Avro body of `schema` that starts at `start`;
    None when the schema uses types this module does not handle."""
    try:
        source, constants = reader_source(schema)
    except Unsupported:
        return None
    namespace: dict[str, Any] = {"_varint_tail": _varint_tail, "_EPOCH": _EPOCH, "_timedelta": timedelta,
                                 "_INT_MIN": _INT_MIN, "_INT_MAX": _INT_MAX, "NotPlain": NotPlain, **constants}
    exec(compile(source, f"<avro reader for {label}>", "exec"), namespace)  # our own generated code, from our own schemas
    return namespace["read"]
