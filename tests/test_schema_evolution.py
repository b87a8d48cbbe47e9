"""Schema evolution: versions of an event schema that readers resolve, and a check that refuses the others."""

from __future__ import annotations

import copy
import io
import json
import uuid
from datetime import UTC, datetime

import fastavro
import psycopg
import pytest
from events_factory import PRODUCER, Publisher, at, dump_tables, message_key, topic_for
from replay_support import replay

from assetlog.config import Topics
from assetlog.consumers import run_until_caught_up
from assetlog.producer.assets import Asset
from assetlog.producer.event_builders import FinishedTaskRun, ProducerIdentity
from assetlog.producer.run_encoding import encode_run_generic, encode_run_pinned, run_encoder
from assetlog.projections import migrate
from assetlog.schemas import MATERIALIZATION, decode, registry
from assetlog.schemas.compatibility import (
    full_incompatibilities,
    incompatibilities,
    registry_incompatibilities,
)


def schema(event_type: str, version: int) -> dict:
    """The raw JSON of a shipped schema (to derive variants from)."""
    from importlib import resources

    text = (resources.files("assetlog.schemas") / f"{event_type}.v{version}.avsc").read_text(encoding="utf-8")
    return json.loads(text)


def field(record: dict, name: str) -> dict:
    return next(f for f in record["fields"] if f["name"] == name)


def without(record: dict, name: str) -> dict:
    changed = copy.deepcopy(record)
    changed["fields"] = [f for f in changed["fields"] if f["name"] != name]
    return changed


def materialization(**extra) -> dict:
    return {"event_id": str(uuid.uuid4()), "event_time": datetime(2025, 5, 1, tzinfo=UTC), "asset_key": "s3://a/b",
            "status": "SUCCEEDED", "properties": None, "by": "dbt", "upstream_keys": ["s3://a/up"], "error": None,
            "run": {"flow_run_id": None, "flow_name": None, "task_run_id": str(uuid.uuid4()), "task_name": "t"},
            "producer": PRODUCER, **extra}


def write(writer_schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(writer_schema), record)
    return out.getvalue()


def read(reader_schema: dict, writer_schema: dict, body: bytes) -> dict:
    return fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(writer_schema),
                                      fastavro.parse_schema(reader_schema))


def test_every_pair_of_shipped_schema_versions_is_compatible_both_ways():
    versions = [v for v in registry().by_fingerprint.values() if v.event_type == MATERIALIZATION]
    assert sorted(v.version for v in versions) == [1, 2]
    assert registry_incompatibilities(registry()) == {}


def test_adding_an_optional_field_with_a_default_is_accepted_and_both_versions_read_each_other():
    v1, v2 = schema(MATERIALIZATION, 1), schema(MATERIALIZATION, 2)
    assert field(v2, "task_version") == {**field(v2, "task_version"), "type": ["null", "string"], "default": None}
    assert full_incompatibilities(v1, v2) == []
    old = materialization()
    assert read(v2, v1, write(v1, old))["task_version"] is None  # v1 event, v2 reader: the default
    new = materialization(task_version="2.1")
    assert "task_version" not in read(v1, v2, write(v2, new))  # v2 event, v1 reader: ignored


def test_removing_a_field_without_default_is_rejected():
    v1 = schema(MATERIALIZATION, 1)
    removed = without(v1, "asset_key")
    problems = full_incompatibilities(v1, removed)
    assert problems == ["reading newer with older: asset_key: the reader needs this field, the writer does not "
                        "write it, and it has no default"]
    with pytest.raises(fastavro.read.SchemaResolutionError):  # what the check spares a consumer
        record = materialization()
        del record["asset_key"]
        read(v1, removed, write(removed, record))
    # A field with a default may go: old readers fill it in.
    assert full_incompatibilities(v1, without(v1, "by")) == []


@pytest.mark.parametrize(("name", "new_type", "problem"), [
    ("by", ["null", "int"], "by: the writer's string cannot be read as union [null, int]"),
    ("asset_key", "bytes", None),  # string <-> bytes is a promotion both ways: accepted
    ("upstream_keys", {"type": "array", "items": "int"}, "upstream_keys[]: type changed from int to string"),
    ("event_time", "long", "event_time: logical type changed from None to timestamp-micros"),
])
def test_changing_a_field_type_is_rejected(name, new_type, problem):
    v1 = schema(MATERIALIZATION, 1)
    changed = copy.deepcopy(v1)
    field(changed, name)["type"] = new_type
    problems = full_incompatibilities(v1, changed)
    if problem is None:
        assert problems == []
    else:
        assert any(p.endswith(problem) for p in problems), problems


def test_a_changed_type_in_a_nested_record_is_reported_with_its_path():
    v1 = schema(MATERIALIZATION, 1)
    changed = copy.deepcopy(v1)
    run_fields = field(changed, "run")["type"]["fields"]
    next(f for f in run_fields if f["name"] == "task_name")["type"] = "int"
    assert incompatibilities(v1, changed) == ["run.task_name: type changed from int to string"]
    with pytest.raises(fastavro.read.SchemaResolutionError):
        record = materialization()
        record["run"]["task_name"] = 7
        read(v1, changed, write(changed, record))


def test_promotions_and_dropped_enum_symbols():
    v1 = schema(MATERIALIZATION, 1)
    wider = copy.deepcopy(v1)
    field(field(wider, "producer")["type"], "pid")["type"] = "long"
    assert incompatibilities(wider, v1) == []  # int written, long read: a promotion
    assert incompatibilities(v1, wider) == ["producer.pid: type changed from long to int"]
    fewer = copy.deepcopy(v1)
    field(fewer, "status")["type"]["symbols"] = ["SUCCEEDED"]
    assert incompatibilities(fewer, v1) == [
        "status: enum symbols FAILED are unknown to the reader (and it has no default symbol)"]


def test_v1_events_decode_like_fastavro_resolution_does():
    """The codec's shortcut (decode with the writer schema, add the appended defaults) is exact."""
    reg = registry()
    record = materialization(properties={"name": "n", "description": None, "owners": ["o"], "url": None})
    data = reg.encode(MATERIALIZATION, record, version=1)
    event_type, fast = decode(data)
    v1, v2 = reg.writer(MATERIALIZATION, 1), reg.writer(MATERIALIZATION, 2)
    buffer = io.BytesIO(data[10:])
    assert (event_type, fast) == (MATERIALIZATION, fastavro.schemaless_reader(buffer, v1.schema, v2.schema))
    assert list(fast) == [f["name"] for f in schema(MATERIALIZATION, 2)["fields"]]


def test_the_producer_writes_v2_with_the_task_version():
    run = FinishedTaskRun(assets=(Asset(key="s3://a/b"),), upstream=(), metadata={}, status="SUCCEEDED", error=None,
                          by=None, event_time=1_700_000_000_000_000, task_run_id=str(uuid.uuid4()), task_name="t",
                          task_version="2.1")
    identity = ProducerIdentity("h", 1, "0.1.0")

    class Ids:
        def __init__(self) -> None:
            self.n = 0

        def __call__(self) -> str:
            self.n += 1
            return f"00000000-0000-4000-8000-{self.n:012d}"

        def encoded(self) -> bytes:
            return b"H" + self().encode()

    assert run_encoder() is encode_run_pinned  # the fast path stays on for the newest schemas
    fast = encode_run_pinned(run, Topics("p"), identity, Ids())
    assert fast == encode_run_generic(run, Topics("p"), identity, Ids())
    assert fast[0][2][2:10] == registry().writer(MATERIALIZATION, 2).fingerprint
    assert decode(fast[0][2])[1]["task_version"] == "2.1"


def test_v1_and_v2_events_replay_side_by_side(isolated):
    """Old events stay on the topics as they were written; a replay reads both versions."""
    migrate(isolated.dsn)
    reg = registry()
    old = materialization(event_time=at(1), asset_key="s3://lake/a.csv", by=None,
                          properties={"name": "A", "description": None, "owners": ["x"], "url": None})
    new = materialization(event_time=at(2), asset_key="s3://lake/a.csv", task_version="2.1", upstream_keys=[],
                          properties={"name": "A2", "description": "v2", "owners": None, "url": None})
    publisher = Publisher(isolated.settings)
    for version, record in ((1, old), (2, new), (1, materialization(event_time=at(3), asset_key="s3://lake/b.csv"))):
        publisher.raw(topic_for(isolated.settings, MATERIALIZATION), message_key(MATERIALIZATION, record),
                      reg.encode(MATERIALIZATION, record, version=version))
    publisher.flush()
    for name in ("properties", "lineage"):
        run_until_caught_up(name, isolated.settings)
    live = dump_tables(isolated.dsn)

    assert replay(isolated, "all", "--check")["drift"] is False
    summary = replay(isolated, "all")
    assert summary["messages"] == 3 and summary["written"]["lineage"]["dead_letters"] == 0
    assert dump_tables(isolated.dsn) == live
    with psycopg.connect(isolated.dsn) as conn:
        versions = dict(conn.execute("SELECT event_id::text, payload ->> 'task_version' FROM lineage_history"))
        properties = conn.execute("SELECT name, description FROM asset_properties WHERE key = %s",
                                  ("s3://lake/a.csv",)).fetchone()
    assert versions[old["event_id"]] is None and versions[new["event_id"]] == "2.1"
    assert properties == ("A2", "v2")  # last write wins across versions


def test_a_task_version_travels_from_the_sdk_to_the_history(isolated):
    from producer_support import run_and_read

    from assetlog.producer import materialize

    @materialize("s3://lake/versioned.csv", version="2.1")
    def build() -> int:
        return 1

    outcome = run_and_read(isolated.settings, build)
    assert outcome.materialization("s3://lake/versioned.csv")["task_version"] == "2.1"
    assert outcome.events[0].value[2:10] == registry().writer(MATERIALIZATION, 2).fingerprint
    migrate(isolated.dsn)
    run_until_caught_up("lineage", isolated.settings)
    with psycopg.connect(isolated.dsn) as conn:
        assert conn.execute("SELECT payload ->> 'task_version' FROM lineage_history").fetchall() == [("2.1",)]
