"""The producer's fast encoders write exactly what the reference Avro encoder writes."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from assetlog.config import Topics
from assetlog.producer.assets import Asset, AssetProperties
from assetlog.producer.encoding import compile_encoder, encoder_for, is_compiled, micros, write_long
from assetlog.producer.event_builders import (
    EXPLICIT,
    FAILED,
    INFERRED,
    SUCCEEDED,
    EventIdSource,
    FinishedTaskRun,
    ProducerIdentity,
    Upstream,
    events_for,
    new_event_id,
)
from assetlog.producer.run_encoding import encode_run_generic, encode_run_pinned, run_encoder
from assetlog.schemas import EVENT_TYPES, decode, encode, registry

text = st.text(max_size=80)
keys = st.from_regex(r"[a-z0-9]{1,6}://[A-Za-z0-9/._\-ü]{0,60}", fullmatch=True)
properties = st.none() | st.builds(
    AssetProperties, name=st.none() | text, description=st.none() | st.text(max_size=300),
    owners=st.none() | st.lists(text, max_size=70), url=st.none() | text)
assets = st.builds(Asset, key=keys, properties=properties)
upstreams = st.builds(Upstream, asset=assets, declared=st.sampled_from([INFERRED, EXPLICIT]),
                      with_properties=st.booleans())
runs = st.builds(
    FinishedTaskRun,
    assets=st.lists(assets, min_size=1, max_size=3, unique_by=lambda a: a.key).map(tuple),
    upstream=st.lists(upstreams, max_size=4, unique_by=lambda u: u.asset.key).map(tuple),
    metadata=st.just({}),
    status=st.sampled_from([SUCCEEDED, FAILED]),
    error=st.none() | st.tuples(text, st.text(max_size=5000)),
    by=st.none() | text,
    event_time=st.integers(min_value=-(2**62), max_value=2**62),
    task_run_id=text, task_name=text,
    flow_run_id=st.none() | text, flow_name=st.none() | text,
)
identities = st.builds(ProducerIdentity, host=text, pid=st.integers(min_value=-(2**31), max_value=2**31 - 1),
                       version=text)


class CountingIds:
    """Predictable ids, as text and as Avro strings, so both encoders can be compared."""

    def __init__(self) -> None:
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"00000000-0000-4000-8000-{next(self._count):012d}"

    def encoded(self) -> bytes:
        return b"H" + self().encode()


def counter_ids() -> CountingIds:
    return CountingIds()


@settings(max_examples=150, deadline=None)
@given(run=runs, identity=identities, data=st.data())
def test_the_compiled_encoders_match_the_reference_encoder(run, identity, data):
    if run.assets:
        run.metadata = {run.assets[0].key: data.draw(st.sampled_from(['{"a":1}', '{"ü":[1,2,{"x":null}]}', "{}"]))}
    for event in events_for(run, Topics("p"), identity, counter_ids()):
        assert encoder_for(event.event_type)(event.record, {}) == encode(event.event_type, event.record)


@settings(max_examples=150, deadline=None)
@given(run=runs, identity=identities)
def test_the_run_encoder_writes_the_same_messages_as_records_plus_encoders(run, identity):
    topics = Topics("p.q")
    assert encode_run_pinned(run, topics, identity, counter_ids()) == encode_run_generic(run, topics, identity,
                                                                                    counter_ids())


@settings(max_examples=60, deadline=None)
@given(run=runs, identity=identities, data=st.data())
def test_runs_of_one_shape_share_its_bytes_and_keep_their_own(run, identity, data):
    """The run encoder keeps what a task's runs share (assets, upstream, names, producer) once per
    shape: later runs with the same assets and upstream tuples, their own id, time and metadata,
    and some of the texts changed, still write exactly what records plus encoders write."""
    topics = Topics("p.q")
    for _ in range(4):
        later = dataclasses.replace(
            run, task_run_id=data.draw(st.sampled_from([run.task_run_id, str(uuid.uuid4())])),
            event_time=data.draw(st.integers(min_value=-(2**62), max_value=2**62)),
            metadata={asset.key: data.draw(st.sampled_from(['{"a":1}', '{"ü":[1,2]}', "{}"]))
                      for asset in run.assets if data.draw(st.booleans())},
            task_name=data.draw(st.sampled_from([run.task_name, "other"])),
            flow_run_id=data.draw(st.sampled_from([run.flow_run_id, None, "f"])),
            flow_name=data.draw(st.sampled_from([run.flow_name, None, "g"])),
            by=data.draw(st.sampled_from([run.by, None, "dbt"])),
            task_version=data.draw(st.sampled_from([None, "1.0"])),
            status=data.draw(st.sampled_from([SUCCEEDED, FAILED])))
        assert encode_run_pinned(later, topics, identity, counter_ids()) == encode_run_generic(
            later, topics, identity, counter_ids())


def test_the_fast_paths_are_in_use_for_the_current_schemas():
    # If this fails, a schema changed: update PINNED_FINGERPRINTS and the layout in run_encoding.py.
    assert run_encoder() is encode_run_pinned
    assert all(is_compiled(t) for t in EVENT_TYPES)


def test_longs_and_timestamps_encode_like_avro():
    for n in (0, -1, 1, 63, -64, 64, 2**31, -(2**63), 2**63 - 1):
        assert write_long(n) == _reference_long(n)
    moment = datetime(2024, 2, 29, 12, 30, 1, 123456, tzinfo=UTC)
    assert micros(moment) == 1709209801123456
    assert micros(moment.replace(tzinfo=None)) == 1709209801123456


def test_a_schema_the_compiler_does_not_know_falls_back_to_nothing_wrong():
    import pytest

    from assetlog.producer.encoding import UnsupportedSchema

    with pytest.raises(UnsupportedSchema):
        compile_encoder({"type": "record", "name": "X", "fields": [{"name": "m", "type": {"type": "map",
                                                                                           "values": "int"}}]}, b"")


def test_decoded_events_round_trip():
    run = FinishedTaskRun(assets=(Asset(key="s3://a"),), upstream=(), metadata={"s3://a": '{"k":1}'},
                          status=SUCCEEDED, error=None, by=None, event_time=1_700_000_000_000_001,
                          task_run_id="t", task_name="n")
    for topic, key, value in encode_run_pinned(run, Topics("p"), ProducerIdentity.current(), EventIdSource()):
        event_type, record = decode(value)
        assert key == b"s3://a" and topic.startswith("p.")
        assert record["event_time"] == datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=UTC)
        assert value[:10] == registry().writer(event_type).header


def test_event_ids_are_unique_version_7_uuids():
    source = EventIdSource()
    encoded = [source.encoded() for _ in range(1000)]
    assert all(e[:1] == b"H" and len(e) == 37 for e in encoded)  # an Avro string of 36 characters
    ids = [new_event_id() for _ in range(1000)] + [source() for _ in range(1000)] + [e[1:].decode() for e in encoded]
    assert len(set(ids)) == 3000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == value


def _reference_long(n: int) -> bytes:
    import io

    from fastavro.io.binary_encoder import BinaryEncoder

    buffer = io.BytesIO()
    BinaryEncoder(buffer).write_long(n)
    return buffer.getvalue()


def test_a_run_id_of_36_characters_that_are_not_all_ascii_gets_its_byte_length():
    """Hypothesis found it once in CI: 36 characters, one of them non-ASCII, were written with the length
    of a UUID (36 bytes) by the run encoder, so the record did not decode. Kept as an explicit case."""
    run = FinishedTaskRun(assets=(Asset(key="0://"),), upstream=(), metadata={}, status=SUCCEEDED, error=None,
                          by=None, event_time=0, task_run_id="0" * 35 + "\x80", task_name="", flow_run_id=None,
                          flow_name=None)
    identity = ProducerIdentity(host="", pid=0, version="")
    topics = Topics("p.q")
    pinned = encode_run_pinned(run, topics, identity, counter_ids())
    assert pinned == encode_run_generic(run, topics, identity, counter_ids())
    for _topic, _key, value in pinned:
        assert decode(value)[1]["run"]["task_run_id"] == "0" * 35 + "\x80"
