"""Event and run ids: unique whatever the workflow does with `random`, and across a fork."""

from __future__ import annotations

import os
import random
import uuid

from assetlog.producer.event_builders import EventIdSource, new_event_id


def test_ids_are_version_4_uuids() -> None:
    for text in (new_event_id() for _ in range(1000)):
        assert str(uuid.UUID(text)) == text and uuid.UUID(text).version == 4
    encoded = EventIdSource().encoded()
    assert encoded[:1] == b"H" and uuid.UUID(encoded[1:].decode()).version == 4


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
