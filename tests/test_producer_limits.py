"""Generated inputs against the rules that keep lineage from being lost: the size check never lets
through an event Kafka would refuse, salvage keeps only real events whatever the damage, and the
outbox-full settings refuse nonsense. Pure or file-only: no broker needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assetlog.config import ConfigError, Settings, Topics
from assetlog.producer.assets import Asset
from assetlog.producer.event_builders import (
    SUCCEEDED,
    EventIdSource,
    FinishedTaskRun,
    ProducerIdentity,
    Upstream,
)
from assetlog.producer.limits import RECORD_OVERHEAD, KafkaLimits, check_metadata_size, check_run_size
from assetlog.producer.metadata import encode_metadata, merged_metadata_json
from assetlog.producer.outbox import Outbox, outbox_path, unpack_messages
from assetlog.producer.outbox_salvage import salvage
from assetlog.producer.recording_errors import EventTooLarge
from assetlog.producer.run_encoding import run_encoder

TOPICS = Topics("limits")
IDENTITY = ProducerIdentity(host="host", pid=1, version="1")
# Characters of every width in UTF-8 (1 to 4 bytes), so byte and character counts differ.
wide_text = st.text(alphabet=st.sampled_from("aZ9 \"\\\u00e9\u20ac\U0001f600\n"), max_size=6000)


@st.composite
def runs_and_limits(draw):
    limit = draw(st.integers(min_value=6000, max_value=40000))
    key = "s3://limits/" + draw(st.text(alphabet="abc/ü", max_size=40))
    values = draw(st.dictionaries(st.text(alphabet="kv", min_size=1, max_size=5), wide_text, max_size=4))
    upstream = tuple(Upstream(Asset(key=f"s3://up/{i}" + "u" * draw(st.integers(0, 300))), "INFERRED")
                     for i in range(draw(st.integers(0, 40))))
    error = draw(st.none() | st.tuples(st.just("ValueError"), wide_text))
    metadata = {key: merged_metadata_json(encode_metadata(values))} if values else {}
    run = FinishedTaskRun(assets=(Asset(key=key),), upstream=upstream, metadata=metadata, status=SUCCEEDED,
                          error=error, by=None, event_time=0, task_run_id="r", task_name="t")
    return run, KafkaLimits(producer_max=limit), values


@settings(max_examples=200, deadline=None)
@given(runs_and_limits())
def test_a_run_passes_the_size_check_only_if_every_event_fits(case):
    run, limits, _ = case
    encoded = run_encoder()(run, TOPICS, IDENTITY, EventIdSource())
    too_large = [len(k) + len(v) for topic, k, v in encoded if len(k) + len(v) > limits.for_topic(topic)]
    if too_large:
        with pytest.raises(EventTooLarge, match="s3://limits/"):
            check_run_size(run, limits, run_encoder(), TOPICS, IDENTITY)
    else:
        check_run_size(run, limits, run_encoder(), TOPICS, IDENTITY)


@settings(max_examples=200, deadline=None)
@given(runs_and_limits())
def test_metadata_that_passes_at_add_time_fits_in_its_event(case):
    run, limits, values = case
    key = run.assets[0].key
    try:
        check_metadata_size(key, encode_metadata(values), limits, TOPICS.metadata)
    except EventTooLarge as refused:
        assert key in str(refused) and f"{limits.for_topic(TOPICS.metadata):,}" in str(refused)
        return
    bare = FinishedTaskRun(assets=run.assets, upstream=(), metadata=run.metadata, status=SUCCEEDED, error=None,
                           by=None, event_time=0, task_run_id="r", task_name="t")
    for topic, k, v in run_encoder()(bare, TOPICS, IDENTITY, EventIdSource()):
        if topic == TOPICS.metadata:
            assert len(k) + len(v) <= limits.for_topic(topic)


def test_the_limit_is_the_smaller_of_producer_and_topic():
    limits = KafkaLimits(producer_max=1_000_000, topic_max={TOPICS.metadata: 50_000})
    assert limits.for_topic(TOPICS.metadata) == 50_000 - RECORD_OVERHEAD
    assert limits.for_topic(TOPICS.materializations) == 1_000_000 - RECORD_OVERHEAD
    assert limits.smallest == 50_000 - RECORD_OVERHEAD


@pytest.mark.parametrize(("variables", "message"), [
    ({"ASSETLOG_OUTBOX_FULL": "wait"}, "expected one of block, fail"),
    ({"ASSETLOG_OUTBOX_FULL_WAIT_SECONDS": "-1"}, "0 or more"),
    ({"ASSETLOG_OUTBOX_FULL_WAIT_SECONDS": "soon"}, "0 or more"),
    ({"ASSETLOG_OUTBOX_FULL_WAIT_SECONDS": "inf"}, "0 or more"),
    ({"ASSETLOG_OUTBOX_FULL_WAIT_SECONDS": "nan"}, "0 or more"),
])
def test_outbox_full_settings_refuse_nonsense_naming_the_variable(variables, message):
    with pytest.raises(ConfigError, match=message) as refused:
        Settings.from_env(variables)
    assert next(iter(variables)) in str(refused.value)


def test_outbox_full_settings_default_to_block_for_five_minutes():
    assert (Settings.from_env({}).outbox_full, Settings.from_env({}).outbox_full_wait) == ("block", 300.0)
    chosen = Settings.from_env({"ASSETLOG_OUTBOX_FULL": "FAIL", "ASSETLOG_OUTBOX_FULL_WAIT_SECONDS": "2.5"})
    assert (chosen.outbox_full, chosen.outbox_full_wait) == ("fail", 2.5)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, set]:
    directory = tmp_path_factory.mktemp("pristine")
    outbox = Outbox(directory)
    originals = set()
    try:
        for r in range(120):
            batch = [(f"s3://k/{r}/{i}".encode(), bytes([r % 256]) * (60 + r)) for i in range(30)]
            outbox.append([("t", batch)], None)
            originals.update(batch)
        outbox.checkpoint()
    finally:
        outbox.close()
    return directory, originals


damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(min_value=0.0, max_value=0.99)),
    st.tuples(st.just("scribble"), st.floats(min_value=0.0, max_value=0.99), st.integers(1, 200_000)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=damage)
def test_salvage_keeps_only_real_events_whatever_the_damage(pristine, tmp_path_factory, how):
    source, originals = pristine
    directory = tmp_path_factory.mktemp("damaged")
    shutil.copyfile(outbox_path(source), outbox_path(directory))
    path = outbox_path(directory)
    data = bytearray(path.read_bytes())
    at = int(how[1] * len(data))
    if how[0] == "truncate":
        del data[at:]
    else:
        end = min(len(data), at + how[2])
        data[at:end] = bytes((i * 7 + 13) % 256 for i in range(end - at))
    path.write_bytes(bytes(data))

    report = salvage(directory)
    if report["damaged"]:
        assert Path(report["set_aside"]).read_bytes() == bytes(data)  # set aside untouched
    outbox = Outbox(directory)  # a usable outbox, whatever happened
    try:
        kept = [m for (payload,) in outbox.conn.execute("SELECT payload FROM outbox")
                for m in unpack_messages(payload)]
    finally:
        outbox.close()
    assert len(kept) == report["events_kept"] and len(set(kept)) == len(kept)
    assert set(kept) <= originals
