"""Schema evolution rules: can a reader schema read what a writer schema wrote?

Events stay on the topics forever and are replayed by readers built long
after them, while producers not yet upgraded keep writing older versions: so
every pair of versions of an event type must be readable both ways (Avro
"full" compatibility). Adding a field with a default passes; removing a field
that has no default, changing a field's type (beyond Avro's promotions, e.g.
int to long), renaming a record or dropping an enum symbol are reported, with
the path of the field. The rules are Avro's schema resolution rules, checked
ahead of time instead of failing while decoding; the test suite runs them
over every pair of versions shipped in this package.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: the codec imports this module, never the other way at run time
    from assetlog.schemas.codec import SchemaRegistry, SchemaVersion

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
# Writer type -> reader types it is promoted to (Avro specification, "Schema Resolution").
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def _named_types(schema: Any, found: dict[str, Any] | None = None, namespace: str = "") -> dict[str, Any]:
    """Every named type (record, enum, fixed) by full and short name, as defined in `schema`."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, found, namespace)
    elif isinstance(schema, Mapping):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = schema["name"]
            space = schema.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
            full = name if "." in name else (f"{space}.{name}" if space else name)
            found.setdefault(full, schema)
            found.setdefault(full.rsplit(".", 1)[-1], schema)
            for field in schema.get("fields", ()):
                _named_types(field["type"], found, space)
        elif kind in ("array", "map"):
            _named_types(schema.get("items", schema.get("values")), found, namespace)
        elif isinstance(kind, list | Mapping):
            _named_types(kind, found, namespace)
    return found


class _Checker:
    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader_names = _named_types(reader)
        self.writer_names = _named_types(writer)
        self.problems: list[str] = []
        self._seen: set[tuple[int, int]] = set()  # recursive types: each pair of records once

    def deref(self, schema: Any, names: Mapping[str, Any]) -> Any:
        while isinstance(schema, str) and schema not in PRIMITIVES:
            if schema not in names:
                raise ValueError(f"unknown type name {schema!r}")
            schema = names[schema]
        while isinstance(schema, Mapping) and isinstance(schema.get("type"), list | Mapping):
            schema = schema["type"]
        return schema

    @staticmethod
    def kind(schema: Any) -> str:
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            return "union"
        return "record" if schema["type"] == "error" else str(schema["type"])

    @staticmethod
    def describe(schema: Any) -> str:
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            return "union [" + ", ".join(_Checker.describe(b) for b in schema) + "]"
        if "name" in schema:
            return f"{schema['type']} {schema['name'].rsplit('.', 1)[-1]}"
        if schema.get("logicalType"):
            return f"{schema['type']} ({schema['logicalType']})"
        return str(schema["type"])

    def readable(self, reader: Any, writer: Any) -> bool:
        """Would `reader` read `writer` data? (without recording problems)."""
        saved, self.problems = self.problems, []
        try:
            self.check(reader, writer, "")
            return not self.problems
        finally:
            self.problems = saved

    def check(self, reader: Any, writer: Any, path: str) -> None:
        reader = self.deref(reader, self.reader_names)
        writer = self.deref(writer, self.writer_names)
        where = path or "the record"
        if isinstance(writer, list):
            for branch in writer:
                if not self.readable(reader, branch):
                    self.problems.append(f"{where}: the writer's {self.describe(branch)} cannot be read as "
                                         f"{self.describe(reader)}")
            return
        if isinstance(reader, list):
            if not any(self.readable(branch, writer) for branch in reader):
                self.problems.append(f"{where}: the writer's {self.describe(writer)} matches no branch of the "
                                     f"reader's {self.describe(reader)}")
            return
        r_kind, w_kind = self.kind(reader), self.kind(writer)
        r_logical = reader.get("logicalType") if isinstance(reader, Mapping) else None
        w_logical = writer.get("logicalType") if isinstance(writer, Mapping) else None
        if r_kind != w_kind:
            if w_kind not in PROMOTIONS or r_kind not in PROMOTIONS[w_kind]:
                self.problems.append(f"{where}: type changed from {self.describe(writer)} to {self.describe(reader)}")
            return
        if r_logical != w_logical:
            self.problems.append(f"{where}: logical type changed from {w_logical} to {r_logical}")
            return
        if r_kind in ("record", "enum", "fixed"):
            r_name, w_name = reader["name"].rsplit(".", 1)[-1], writer["name"].rsplit(".", 1)[-1]
            aliases = {a.rsplit(".", 1)[-1] for a in reader.get("aliases", ())}
            if r_name != w_name and w_name not in aliases:
                self.problems.append(f"{where}: {r_kind} renamed from {w_name} to {r_name} (no alias)")
                return
        if r_kind == "record":
            self.check_record(reader, writer, path)
        elif r_kind == "enum":
            dropped = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if dropped and "default" not in reader:
                self.problems.append(f"{where}: enum symbols {', '.join(dropped)} are unknown to the reader "
                                     "(and it has no default symbol)")
        elif r_kind == "fixed" and reader["size"] != writer["size"]:
            self.problems.append(f"{where}: fixed size changed from {writer['size']} to {reader['size']}")
        elif r_kind == "array":
            self.check(reader["items"], writer["items"], f"{path}[]")
        elif r_kind == "map":
            self.check(reader["values"], writer["values"], f"{path}{{}}")

    def check_record(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> None:
        pair = (id(reader), id(writer))
        if pair in self._seen:
            return
        self._seen.add(pair)
        written = {field["name"]: field for field in writer["fields"]}
        for field in reader["fields"]:
            name = f"{path}.{field['name']}" if path else field["name"]
            source = written.get(field["name"])
            if source is None:
                source = next((written[a] for a in field.get("aliases", ()) if a in written), None)
            if source is not None:
                self.check(field["type"], source["type"], name)
            elif "default" not in field:
                self.problems.append(f"{name}: the reader needs this field, the writer does not write it, "
                                     "and it has no default")


def incompatibilities(reader: Any, writer: Any) -> list[str]:
    """Why `reader` cannot read data written with `writer` (empty: it can)."""
    checker = _Checker(reader, writer)
    checker.check(reader, writer, "")
    return checker.problems


def full_incompatibilities(older: Any, newer: Any) -> list[str]:
    """Problems in either direction: new readers reading old events, old readers reading new ones."""
    return ([f"reading older with newer: {p}" for p in incompatibilities(newer, older)]
            + [f"reading newer with older: {p}" for p in incompatibilities(older, newer)])


def registry_incompatibilities(registry: SchemaRegistry) -> dict[str, list[str]]:
    """Every pair of versions of each event type in `registry`, checked both ways."""
    by_type: dict[str, list[SchemaVersion]] = {}
    for version in registry.by_fingerprint.values():
        by_type.setdefault(version.event_type, []).append(version)
    found: dict[str, list[str]] = {}
    for versions in by_type.values():
        for older, newer in itertools.combinations(sorted(versions, key=lambda v: v.version), 2):
            problems = full_incompatibilities(older.schema, newer.schema)
            if problems:
                found[f"{older.source} / {newer.source}"] = problems
    return found


def _strip_docs(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strip_docs(s) for s in schema]
    if isinstance(schema, Mapping):
        return {k: _strip_docs(v) for k, v in schema.items() if k not in ("doc", "__fastavro_parsed",
                                                                             "__named_schemas")}
    return schema


_PLAIN_DEFAULTS = (type(None), bool, int, float, str)


def appended_defaults(reader: Mapping[str, Any], writer: Mapping[str, Any]) -> list[tuple[str, Any]] | None:
    """When `reader` is `writer` plus fields appended at the end with plain defaults, those fields.

    Then resolving writer to reader is decoding with the writer schema and
    adding the defaults, which costs nothing, instead of fastavro's generic
    resolution (which doubles the decoding time). None for any other change.
    """
    r_fields, w_fields = reader.get("fields"), writer.get("fields")
    if reader.get("type") != "record" or not isinstance(r_fields, list) or not isinstance(w_fields, list):
        return None
    if len(r_fields) <= len(w_fields) or reader.get("name") != writer.get("name"):
        return None
    for r_field, w_field in zip(r_fields, w_fields, strict=False):
        if r_field["name"] != w_field["name"] or _strip_docs(r_field["type"]) != _strip_docs(w_field["type"]):
            return None
    added = []
    for field in r_fields[len(w_fields):]:
        if "default" not in field:
            return None
        default, kind = field["default"], field["type"]
        if isinstance(kind, list):
            kind = kind[0]  # a union's default is of its first branch
        if isinstance(kind, Mapping) and kind.get("logicalType"):
            return None  # fastavro would convert it (e.g. to a datetime)
        if not isinstance(default, _PLAIN_DEFAULTS) and default not in ([], {}):
            return None
        added.append((field["name"], copy.deepcopy(default)))
    return added
