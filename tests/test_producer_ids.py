"""Event and run ids: unique whatever the workflow does with `random`, and across a fork."""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest

from assetlog.producer.event_builders import EventIdSource, new_event_id


def _milliseconds(text: str) -> int:
    return int(text.replace("-", "")[:12], 16)


def test_ids_are_version_7_uuids_that_rise_and_carry_the_time() -> None:
    before = time.time_ns() // 1_000_000
    texts = [new_event_id() for _ in range(1000)]
    for text in texts:
        assert str(uuid.UUID(text)) == text and uuid.UUID(text).version == 7
        assert uuid.UUID(text).variant == uuid.RFC_4122
    source = EventIdSource()
    ours = [source() for _ in range(1000)]  # several batches: the rise holds across them
    encoded = [source.encoded() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    assert ours == sorted(ours) and len(set(ours)) == len(ours)
    assert all(e[:1] == b"H" and uuid.UUID(e[1:].decode()).version == 7 for e in encoded)
    assert [e[1:].decode() for e in encoded] == sorted(e[1:].decode() for e in encoded)
    # this thread's source may hand out a batch minted up to its freshness ago; each batch takes a
    # millisecond after the one before, so a fast loop may run a few ms ahead
    fresh_ms = EventIdSource._FRESH_FOR_NS // 1_000_000
    assert all(before - fresh_ms <= _milliseconds(text) <= after + 16 for text in texts)
    assert all(before <= _milliseconds(text) <= after + 16 for text in ours)


def test_ids_keep_rising_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    source = EventIdSource()
    first = [source() for _ in range(300)]
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000_000)  # 2001, long before `first`
    second = [source() for _ in range(300)]
    assert first + second == sorted(first + second)


def test_a_batch_older_than_its_freshness_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process running one task an hour must not stamp today's events with a batch minted last week."""
    source = EventIdSource()
    now = [10**18]
    monkeypatch.setattr(time, "monotonic_ns", lambda: now[0])
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    first_text, first_encoded = source(), source.encoded()
    now[0] += EventIdSource._FRESH_FOR_NS + 1
    later_text, later_encoded = source(), source.encoded()
    assert _milliseconds(later_text) - _milliseconds(first_text) == (EventIdSource._FRESH_FOR_NS + 1) // 1_000_000
    assert _milliseconds(later_encoded[1:].decode()) > _milliseconds(first_encoded[1:].decode()) + 999


def test_a_workflow_seeding_random_cannot_repeat_ids() -> None:
    random.seed(7)
    first = {new_event_id() for _ in range(600)}  # more than a batch: the source draws again after the seed
    random.seed(7)
    second = {new_event_id() for _ in range(600)}
    assert len(first) == 600 and not first & second


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_event_id()  # the parent's per-thread source exists, with ids left in its batch
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, "".join(new_event_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        theirs = pipe.read()
    ours = "".join(new_event_id() for _ in range(10))
    assert len(theirs) == len(ours) == 360 and theirs != ours
