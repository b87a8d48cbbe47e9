"""Runs whose event ids are derived from another system's event ids (the Prefect bridge) encode them
exactly, on both encoders, and link every dependency and metadata event to its materialization."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from test_producer_encoding import counter_ids, identities, runs

from assetlog.config import Topics
from assetlog.producer.event_builders import derived_event_id, derived_event_ids, events_for
from assetlog.producer.run_encoding import encode_run_generic, encode_run_pinned
from assetlog.schemas import decode

seeds = st.uuids().map(str)


@settings(max_examples=100, deadline=None)
@given(run=runs, identity=identities, seed=seeds, with_metadata=st.booleans())
def test_derived_ids_are_what_both_encoders_write(run, identity, seed, with_metadata):
    metadata = {run.assets[0].key: '{"rows":1}'} if with_metadata else {}
    run = dataclasses.replace(run, metadata=metadata, event_time=1_700_000_000_000_000)
    seed_of = {asset.key: f"{seed}-{i}" for i, asset in enumerate(run.assets)}
    run = dataclasses.replace(run, event_ids=derived_event_ids(run, seed_of))
    topics = Topics("p")
    fast = encode_run_pinned(run, topics, identity, counter_ids())
    assert fast == encode_run_generic(run, topics, identity, counter_ids())
    records = [decode(value)[1] for _, _, value in fast]
    assert [r["event_id"] for r in records] == list(run.event_ids)
    for event, record in zip(events_for(run, topics, identity), records, strict=True):
        seed_here = seed_of[event.key]
        if event.topic == topics.materializations:
            assert record["event_id"] == derived_event_id(seed_here)
        else:
            assert record["materialization_event_id"] == derived_event_id(seed_here)
        if event.topic == topics.dependencies:
            assert record["event_id"] == derived_event_id(seed_here, f"dependency/{record['upstream_key']}")
        if event.topic == topics.metadata:
            assert record["event_id"] == derived_event_id(seed_here, "metadata")


@given(seed=st.text(), part=st.text())
def test_a_derived_id_is_the_uuid5_of_seed_and_part(seed, part):
    import uuid

    from assetlog.producer.event_builders import DERIVED_ID_NAMESPACE

    name = f"{seed}/{part}" if part else seed
    assert derived_event_id(seed, part) == str(uuid.uuid5(DERIVED_ID_NAMESPACE, name))


def test_a_derived_id_depends_only_on_its_seed_and_part():
    assert derived_event_id("e1") == derived_event_id("e1") != derived_event_id("e2")
    assert derived_event_id("e1", "metadata") != derived_event_id("e1")
    assert len({derived_event_id("e1", f"dependency/s3://{n}") for n in range(50)}) == 50
