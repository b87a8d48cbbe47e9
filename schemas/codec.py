"""Avro single-object encoding of Assetlog events, by schema fingerprint.

Every message is `C3 01` + the writer schema's 8-byte little-endian
CRC-64-AVRO fingerprint + the Avro body, so it names its exact writer schema
without a schema registry server. The registry of known fingerprints is built
from the `.avsc` files shipped in this package (`<event type>.v<N>.avsc`);
readers resolve any known writer version to the newest version of that type.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from assetlog.schemas.compatibility import appended_defaults
from assetlog.schemas.compiled import best_reader
from assetlog.schemas.specialised import Reader

MAGIC = b"\xc3\x01"
HEADER_LENGTH = len(MAGIC) + 8
SCHEMA_FILE = re.compile(r"^(?P<event_type>[a-z_]+)\.v(?P<version>\d+)\.avsc$")

MATERIALIZATION = "materialization"
DEPENDENCY = "dependency"
METADATA = "metadata"
EVENT_TYPES = (MATERIALIZATION, DEPENDENCY, METADATA)


class DecodeError(ValueError):
    """A message that is not a decodable Assetlog event; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SchemaVersion:
    event_type: str
    version: int
    schema: Any  # fastavro's parsed schema
    canonical_form: str
    fingerprint: bytes  # 8 bytes, little-endian, as written in the header
    source: str

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification defines it (used to cross-check fastavro)."""
    value = _CRC_EMPTY
    for byte in data:
        value = (value >> 8) ^ _CRC_TABLE[(value ^ byte) & 0xFF]
    return value


_CRC_EMPTY = 0xC15D213AA4D7A795


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        value = i
        for _ in range(8):
            value = (value >> 1) ^ (_CRC_EMPTY & -(value & 1))
        table.append(value)
    return table


_CRC_TABLE = _crc_table()


def load_schema_version(name: str, text: str) -> SchemaVersion:
    match = SCHEMA_FILE.match(name)
    if not match:
        raise ValueError(f"schema file {name!r} must be named <event_type>.v<N>.avsc")
    parsed = fastavro.parse_schema(json.loads(text))
    canonical = to_parsing_canonical_form(parsed)
    return SchemaVersion(
        event_type=match["event_type"],
        version=int(match["version"]),
        schema=parsed,
        canonical_form=canonical,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        source=name,
    )


class SchemaRegistry:
    """Known writer schemas by fingerprint, and the newest (reader) version per event type."""

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        self.latest: dict[str, SchemaVersion] = {}
        for version in versions:
            if version.fingerprint in self.by_fingerprint:
                raise ValueError(f"{version.source} has the same fingerprint as "
                                 f"{self.by_fingerprint[version.fingerprint].source}")
            self.by_fingerprint[version.fingerprint] = version
            current = self.latest.get(version.event_type)
            if current is None or version.version > current.version:
                self.latest[version.event_type] = version
        # An older writer whose newest reader only appends fields with defaults is decoded with its own
        # schema and given the defaults: fastavro's generic resolution would double the decoding time.
        self._appended: dict[bytes, list[tuple[str, Any]]] = {}
        for fingerprint_, version in self.by_fingerprint.items():
            reader = self.latest[version.event_type]
            if reader is not version:
                added = appended_defaults(reader.schema, version.schema)
                if added is not None:
                    self._appended[fingerprint_] = added
        # The hot path: a reader built once per writer schema that needs no resolution (compiled C when the
        # extension was built, else generated Python: `compiled.py`); fastavro stays the reference and
        # decodes whatever the specialised reader refuses.
        self._specialised: dict[bytes, tuple[str, Reader, list[tuple[str, Any]]]] = {}
        for fingerprint_, version in self.by_fingerprint.items():
            if version is self.latest[version.event_type] or fingerprint_ in self._appended:
                read = best_reader(version.schema, version.source)
                if read is not None:
                    self._specialised[fingerprint_] = (version.event_type, read,
                                                       self._appended.get(fingerprint_, []))

    @classmethod
    def from_package(cls) -> SchemaRegistry:
        folder = resources.files("assetlog.schemas")
        versions = [
            load_schema_version(entry.name, entry.read_text(encoding="utf-8"))
            for entry in folder.iterdir()
            if entry.name.endswith(".avsc")
        ]
        return cls(versions)

    def writer(self, event_type: str, version: int | None = None) -> SchemaVersion:
        if version is None:
            return self.latest[event_type]
        for candidate in self.by_fingerprint.values():
            if candidate.event_type == event_type and candidate.version == version:
                return candidate
        raise KeyError(f"no schema {event_type}.v{version}")

    def encode(self, event_type: str, record: Mapping[str, Any], version: int | None = None) -> bytes:
        """Single-object encode `record` with the newest (or the given) version of its schema."""
        writer = self.writer(event_type, version)
        buffer = io.BytesIO()
        buffer.write(writer.header)
        fastavro.schemaless_writer(buffer, writer.schema, record)
        return buffer.getvalue()

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """Decode one message into (event type, record in the newest reader schema).

        Raises `DecodeError` naming the problem; never returns a partial record. Uses the writer
        schema's generated reader when it has one and the bytes are plain; `decode_generic` otherwise,
        so the result (or the error) is always the one fastavro gives.
        """
        event_type, record, _plain = self.decode_checked(data)
        return event_type, record

    def decode_checked(self, data: bytes | None) -> tuple[str, dict[str, Any], bool]:
        """`decode`, and whether the generated reader read it, which proves that no string of the
        record holds a NUL character (the check validation would otherwise make)."""
        if type(data) is bytes and data[:2] == MAGIC:
            found = self._specialised.get(data[2:HEADER_LENGTH])
            if found is not None:
                event_type, read, appended = found
                try:
                    record = read(data, HEADER_LENGTH)
                except Exception:  # anything unusual: fastavro decides, and names the problem
                    return (*self.decode_generic(data), False)
                for name, default in appended:
                    record[name] = type(default)() if isinstance(default, list | dict) else default
                return event_type, record, True
        return (*self.decode_generic(data), False)

    def decode_generic(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """`decode` by fastavro's generic reader alone (the reference the generated readers match)."""
        if not data:
            raise DecodeError("empty", "the message has no value")
        if len(data) < HEADER_LENGTH or data[:2] != MAGIC:
            raise DecodeError("bad-magic", f"expected Avro single-object header C3 01, got {data[:2].hex() or 'nothing'}")
        writer = self.by_fingerprint.get(bytes(data[2:HEADER_LENGTH]))
        if writer is None:
            raise DecodeError("unknown-schema", f"no known schema has fingerprint {bytes(data[2:HEADER_LENGTH]).hex()}")
        reader = self.latest[writer.event_type]
        appended = self._appended.get(writer.fingerprint)
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_LENGTH)
        try:
            record = fastavro.schemaless_reader(
                buffer, writer.schema, None if reader is writer or appended is not None else reader.schema
            )
        except (EOFError, StopIteration, IndexError) as exc:
            raise DecodeError("truncated", f"{writer.source}: the body ends early ({type(exc).__name__})") from exc
        except (ValueError, UnicodeDecodeError, TypeError, OverflowError, MemoryError) as exc:
            raise DecodeError("malformed", f"{writer.source}: {type(exc).__name__}: {exc}"[:300]) from exc
        except Exception as exc:  # fastavro raises assorted types on hostile bytes
            raise DecodeError("malformed", f"{writer.source}: {type(exc).__name__}: {exc}"[:300]) from exc
        if buffer.tell() != len(data):
            raise DecodeError("trailing-bytes", f"{writer.source}: {len(data) - buffer.tell()} bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError("malformed", f"{writer.source}: not a record")
        if appended:
            for name, default in appended:
                record[name] = type(default)() if isinstance(default, list | dict) else default
        return writer.event_type, record


@cache
def registry() -> SchemaRegistry:
    """The registry of the schemas shipped with this version of Assetlog."""
    return SchemaRegistry.from_package()


def encode(event_type: str, record: Mapping[str, Any]) -> bytes:
    return registry().encode(event_type, record)


def decode(data: bytes | None) -> tuple[str, dict[str, Any]]:
    return registry().decode(data)
