"""The .avsc files, their fingerprints and the encoder agree."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from assetlog.schemas import EVENT_TYPES, DecodeError, registry
from assetlog.schemas.codec import MAGIC, crc64_avro, load_schema_version


def test_every_event_type_has_a_documented_schema():
    reg = registry()
    assert set(reg.latest) == set(EVENT_TYPES)
    for version in reg.by_fingerprint.values():
        raw = json.loads(resources.files("assetlog.schemas").joinpath(version.source).read_text())
        assert raw["namespace"] == "io.assetlog.events"
        assert raw.get("doc")
        for field in raw["fields"]:
            assert field.get("doc"), f"{version.source}: field {field['name']} has no doc"
            if isinstance(field["type"], list) and "null" in field["type"]:
                assert "default" in field, f"{version.source}: optional {field['name']} needs a default"


def test_fingerprints_match_the_avro_specification():
    for version in registry().by_fingerprint.values():
        expected = crc64_avro(version.canonical_form.encode()).to_bytes(8, "little")
        assert version.fingerprint == expected
        assert version.header == MAGIC + expected


def test_encoded_messages_name_their_writer_schema():
    record = {
        "event_id": "00000000-0000-0000-0000-000000000001", "event_time": 1_700_000_000_000_001,
        "asset_key": "s3://bucket/x.csv", "metadata_json": '{"rows": 3}',
        "materialization_event_id": "00000000-0000-0000-0000-000000000002", "status": "SUCCEEDED",
        "run": {"flow_run_id": None, "flow_name": None, "task_run_id": "t", "task_name": "n"},
        "producer": {"host": "h", "pid": 1, "version": "0"},
    }
    data = registry().encode("metadata", record)
    assert data[:10] == registry().latest["metadata"].header
    event_type, decoded = registry().decode(data)
    assert event_type == "metadata"
    assert decoded["metadata_json"] == '{"rows": 3}'
    assert decoded["event_time"].isoformat() == "2023-11-14T22:13:20.000001+00:00"


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"\x00\x01" + b"\x00" * 20, "bad-magic"),
    (MAGIC + b"\xff" * 8 + b"\x00", "unknown-schema"),
])
def test_undecodable_messages_name_the_problem(data, reason):
    with pytest.raises(DecodeError) as info:
        registry().decode(data)
    assert info.value.reason == reason


def test_truncated_body_is_rejected():
    record = {
        "event_id": "e", "event_time": 1, "asset_key": "s3://b/x", "metadata_json": "{}",
        "materialization_event_id": "m", "status": "FAILED",
        "run": {"flow_run_id": None, "flow_name": None, "task_run_id": "t", "task_name": "n"},
        "producer": {"host": "h", "pid": 1, "version": "0"},
    }
    data = registry().encode("metadata", record)
    for cut in (len(data) - 1, 12, 20):
        with pytest.raises(DecodeError):
            registry().decode(data[:cut])


def test_schema_file_names_carry_type_and_version():
    with pytest.raises(ValueError, match="<event_type>.v<N>.avsc"):
        load_schema_version("materialization.avsc", "{}")
