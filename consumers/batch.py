"""One consumed batch: Kafka messages sorted into valid events and dead letters.

A message either becomes an `Event` (decoded, of the type its topic carries,
valid) or a `DeadLetter` naming why not; either way its offset counts as
handled, so the next offset of each partition moves past both. Nothing here
does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from assetlog.config import Topics
from assetlog.projections.events import Event, InvalidEvent, Position, to_event
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA, DecodeError, decode


@dataclass(slots=True)
class DeadLetter:
    """A message a projection skips: where it was, what it held, and why."""

    position: Position
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    delivered: bool = False  # copied to the dead-letter topic (so a retried batch does not copy it again)

    @property
    def dead_letter_topic(self) -> str:
        return Topics.dead_letter(self.position.topic)


@dataclass(slots=True)
class Batch:
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0


def event_types_by_topic(topics: Topics) -> dict[str, str]:
    """Which event type each topic carries; any other type on it is a `wrong-topic` dead letter."""
    return {topics.materializations: MATERIALIZATION, topics.dependencies: DEPENDENCY, topics.metadata: METADATA}


def classify(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
             expected_type: str) -> Event | DeadLetter:
    """Decode and validate one message."""
    position = Position(topic, partition, offset)
    try:
        event_type, record = decode(value)
        if event_type != expected_type:
            raise InvalidEvent("wrong-topic", f"a {event_type} event on {topic}, which carries {expected_type} events")
        return to_event(event_type, record, position)
    except (DecodeError, InvalidEvent) as exc:
        return DeadLetter(position, key, value, exc.reason, exc.detail)


def build_batch(messages: Iterable[tuple[str, int, int, bytes | None, bytes | None]],
                expected_types: Mapping[str, str]) -> Batch:
    """Sort (topic, partition, offset, key, value) tuples into a `Batch`."""
    batch = Batch()
    for topic, partition, offset, key, value in messages:
        batch.messages += 1
        item = classify(topic, partition, offset, key, value, expected_types[topic])
        if isinstance(item, Event):
            batch.events.append(item)
        else:
            batch.dead_letters.append(item)
        tp = (topic, partition)
        if offset + 1 > batch.next_offsets.get(tp, -1):
            batch.next_offsets[tp] = offset + 1
    return batch
