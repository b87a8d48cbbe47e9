"""The lean history payload: the columns and the payload of a `lineage_history` row still make the whole event.

Since migration 0009 the payload leaves out the fields the row has columns for
(`projections/events.py`, FIELDS_IN_COLUMNS), and `assetlog_lineage_event(...)`
puts them back. The whole event must be what the payload held before, field for
field (ids as lowercase text), for every event type and schema version: events
are drawn, written through the real Avro encoder and decoder as a consumer reads
them, and compared in PostgreSQL (jsonb equality, so numbers compare as
PostgreSQL stores them on both sides).
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from events_factory import WHOLE_EVENT, apply_directly, events_of, guide_pipelines
from hostile_events import base_events, versions
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from assetlog.projections import InvalidEvent, migrate, to_event
from assetlog.projections.events import FIELDS_IN_COLUMNS, RUN_FIELDS_IN_COLUMNS, event_payload
from assetlog.projections.lineage import history_row
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA, registry

# The expected event and the one migration 0009's function makes of a row's values (given as parameters).
WHOLE_EVENT_OF_VALUES = ("SELECT %s::jsonb, e FROM (SELECT assetlog_lineage_event(%s, %s::uuid, %s, %s, %s, %s, "
                         "%s::uuid, %s::uuid, %s, %s::uuid, %s, %s::jsonb) AS e) AS whole")
UUID_FIELDS = ("event_id", "materialization_event_id")
RUN_UUID_FIELDS = ("flow_run_id", "task_run_id")


@pytest.fixture
def db(isolated):
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        yield conn


def whole_event_before_0009(event_type: str, record: dict[str, Any]) -> str:
    """What `lineage_history.payload` held before migration 0009 (the whole record; a metadata event's
    metadata_json parsed, as `metadata`), with ids in the lowercase form the uuid columns give back."""
    event = to_event(event_type, record)
    body = dict(event.record)
    body["run"] = dict(body["run"])
    for name in UUID_FIELDS:
        if body.get(name) is not None:
            body[name] = body[name].lower()
    for name in RUN_UUID_FIELDS:
        if body["run"][name] is not None:
            body["run"][name] = body["run"][name].lower()
    if event.metadata is not None:
        del body["metadata_json"]
        body["metadata"] = event.metadata
    try:
        return orjson.dumps(body).decode()
    except TypeError:  # an integer beyond 64 bits in the metadata
        return json.dumps(body, ensure_ascii=False, default=datetime.isoformat)


def assert_whole(conn: psycopg.Connection, event_type: str, record: dict[str, Any]) -> None:
    row = history_row(to_event(event_type, record))
    expected, whole = conn.execute(WHOLE_EVENT_OF_VALUES, (whole_event_before_0009(event_type, record), *row[1:2], row[0],
                                                 *row[2:11], row[11].decode())).fetchone()
    assert whole == expected, {k: (whole.get(k, "(absent)"), expected.get(k, "(absent)"))
                               for k in set(whole) | set(expected) if whole.get(k, 0) != expected.get(k, 0)}


def as_consumed(event_type: str, record: dict[str, Any], version: int | None) -> dict[str, Any]:
    """The record as a consumer decodes it from a message written with `version` of its schema."""
    codec = registry()
    return codec.decode(codec.encode(event_type, record, version))[1]


def ids() -> st.SearchStrategy[str]:
    return st.uuids().map(str).flatmap(lambda u: st.sampled_from([u, u.upper()]))


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | texts, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8)


@st.composite
def drawn_event(draw: st.DrawFn) -> tuple[str, dict[str, Any], int]:
    event_type = draw(st.sampled_from([MATERIALIZATION, DEPENDENCY, METADATA]))
    record = dict(base_events()[event_type])
    record["event_id"] = draw(ids())
    record["event_time"] = draw(st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.just(UTC)))
    record["status"] = draw(st.sampled_from(["SUCCEEDED", "FAILED"]))
    record["run"] = {"flow_run_id": draw(st.none() | ids()), "flow_name": draw(st.none() | texts),
                     "task_run_id": draw(ids()), "task_name": draw(texts)}
    if event_type != MATERIALIZATION:
        record["materialization_event_id"] = draw(ids())
    suffix = draw(st.text(string.ascii_letters + "éü/ ", max_size=10))
    key_field = "downstream_key" if event_type == DEPENDENCY else "asset_key"
    record[key_field] = f"s3://bucket/{suffix}x.csv"
    if event_type == MATERIALIZATION:
        record["by"] = draw(st.none() | texts)
        record["properties"] = draw(st.none() | st.just(record["properties"]))
        record["task_version"] = draw(st.none() | texts)
    elif event_type == METADATA:
        record["metadata_json"] = json.dumps(draw(st.dictionaries(texts, json_values, max_size=4)))
    else:
        record["declared"] = draw(st.sampled_from(["EXPLICIT", "INFERRED"]))
    return event_type, record, draw(st.sampled_from(versions(event_type)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=drawn_event())
def test_the_whole_event_is_the_columns_and_the_lean_payload(db, drawn):
    event_type, record, version = drawn
    consumed = as_consumed(event_type, record, version)
    try:
        to_event(event_type, consumed)
    except InvalidEvent:
        assume(False)
    payload = orjson.loads(event_payload(to_event(event_type, consumed)))
    assert not set(payload) & set(FIELDS_IN_COLUMNS) and "run" not in payload
    assert_whole(db, event_type, consumed)


def test_a_run_field_without_a_column_stays_in_the_payload(db):
    """A newer schema may give `run` a field of its own: the payload keeps it, under `run`."""
    event_type, record = MATERIALIZATION, dict(base_events()[MATERIALIZATION])
    record["run"] = {**record["run"], "attempt": 3}
    payload = orjson.loads(event_payload(to_event(event_type, record)))
    assert payload["run"] == {"attempt": 3} and not set(payload["run"]) & RUN_FIELDS_IN_COLUMNS
    assert_whole(db, event_type, record)


def test_rows_written_by_the_projection_give_back_every_event(db):
    """Through the real write path (binary COPY of `history_row`s), then read back in SQL."""
    events = events_of(guide_pipelines())
    apply_directly(db, "lineage", events)
    whole = dict(db.execute(f"SELECT event_id::text, {WHOLE_EVENT} FROM lineage_history").fetchall())
    assert len(whole) == len(events)
    for event_type, record in events:
        expected = db.execute("SELECT %s::jsonb", (whole_event_before_0009(event_type, record),)).fetchone()[0]
        assert whole[record["event_id"].lower()] == expected
    stored = db.execute("SELECT avg(octet_length(payload::text)) FROM lineage_history").fetchone()[0]
    assert stored < 200, stored  # the lean form (the whole events of these runs take 400-550 bytes)
