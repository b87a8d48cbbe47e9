"""One consumed batch: Kafka messages sorted into valid events and dead letters.

A message either becomes an `Event` (decoded, of the type its topic carries,
valid) or a `DeadLetter` naming why not; either way its offset counts as
handled, so the next offset of each partition moves past both. Whatever a
message holds, sorting it cannot raise: an unexpected failure on one message's
content is that message's dead letter (reason `unprocessable`), never the
batch's. Nothing here does I/O.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assetlog.config import Topics
from assetlog.projections.events import Event, InvalidEvent, Position, accept_checked, to_event
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA, DecodeError, registry

Message = tuple[str, int, int, bytes | None, bytes | None]  # topic, partition, offset, key, value

_new_tuple = tuple.__new__  # builds a named tuple from all its fields without its generated Python __new__

MAX_DETAIL = 1000  # characters of a dead letter's detail: enough to read, small enough for a header
MAX_REASON = 64
# Shown escaped in a detail: C0/C1 controls (NUL, which PostgreSQL text refuses, among them) and the
# bidi controls, which would reorder the text around them in a terminal or a web page.
_ESCAPED = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPED.update({c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def storable(text: object, limit: int = MAX_DETAIL) -> str:
    """`text` made safe to store and show anywhere: controls and bidi marks escaped, lone surrogates
    escaped (valid UTF-8), truncated to `limit` characters. Cannot fail, whatever it is given."""
    try:
        value = text if isinstance(text, str) else str(text)
    except Exception:
        value = f"<{type(text).__name__}>"
    if len(value) > 4 * limit:
        value = value[:4 * limit]  # bound the work before escaping
    value = value.translate(_ESCAPED).encode("utf-8", "backslashreplace").decode("utf-8")
    return value if len(value) <= limit else value[:limit - 1] + "…"


@dataclass(slots=True)
class DeadLetter:
    """A message a projection skips: where it was, what it held, and why.

    `reason` and `detail` are made storable on creation (see `storable`): a dead
    letter must be writable whatever the message held, or the message would
    stop its consumer for good.
    """

    position: Position
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    delivered: bool = False  # copied to the dead-letter topic (so a retried batch does not copy it again)

    def __post_init__(self) -> None:
        self.reason = storable(self.reason, MAX_REASON) or "unprocessable"
        self.detail = storable(self.detail) or "(no detail)"

    @property
    def dead_letter_topic(self) -> str:
        return Topics.dead_letter(self.position.topic)


@dataclass(slots=True)
class Batch:
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0
    # The messages as read, kept until the batch commits: an event whose rows the database refuses
    # is dead-lettered with its original key and value.
    source: list[Message] = field(default_factory=list)
    expected_types: Mapping[str, str] = field(default_factory=dict)
    effects: Any = None  # the projection's effects of the events (None: to reduce again)
    received_at: float = field(default_factory=time.monotonic)  # when it was consumed (for batch latency)

    def message_at(self, position: Position) -> Message | None:
        for message in self.source:
            if (message[0], message[1], message[2]) == (position.topic, position.partition, position.offset):
                return message
        return None

    def reject(self, event: Event, reason: str, detail: str) -> DeadLetter:
        """Turn one of this batch's events into a dead letter (its effects must not be written)."""
        assert event.position is not None, "only events read from Kafka can be dead-lettered"
        message = self.message_at(event.position)
        key, value = (message[3], message[4]) if message is not None else (None, None)
        letter = DeadLetter(event.position, key, value, reason, detail)
        self.dead_letters.append(letter)
        return letter


def event_types_by_topic(topics: Topics) -> dict[str, str]:
    """Which event type each topic carries; any other type on it is a `wrong-topic` dead letter."""
    return {topics.materializations: MATERIALIZATION, topics.dependencies: DEPENDENCY, topics.metadata: METADATA}


def describe(exc: BaseException) -> str:
    """An exception as a one-line detail: its type and first line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def classify(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
             expected_type: str, decode: Callable[[bytes | None], tuple[str, dict[str, Any], bool]] | None = None,
             ) -> Event | DeadLetter:
    """Decode and validate one message; never raises on its content. `decode` is the registry's
    `decode_checked`, looked up once per batch by `build_batch`."""
    position = _new_tuple(Position, (topic, partition, offset))  # Position(...), 0.25 us less per message
    try:
        event_type, record, text_checked = (decode or registry().decode_checked)(value)
        if event_type != expected_type:
            raise InvalidEvent("wrong-topic", f"a {event_type} event on {topic}, which carries {expected_type} events")
        if text_checked and accept_checked is not None:  # the compiled fast path for the common valid event
            event = accept_checked(event_type, record, position)
            if event is not None:
                return event
        return to_event(event_type, record, position, text_checked=text_checked)
    except (DecodeError, InvalidEvent) as exc:
        return DeadLetter(position, key, value, exc.reason, exc.detail)
    except Exception as exc:
        return DeadLetter(position, key, value, "unprocessable", f"while decoding or validating: {describe(exc)}")


def build_batch(messages: Iterable[Message], expected_types: Mapping[str, str]) -> Batch:
    """Sort (topic, partition, offset, key, value) tuples into a `Batch`."""
    batch = Batch(expected_types=expected_types)
    source = batch.source = messages if isinstance(messages, list) else list(messages)
    events, letters, next_offsets = batch.events, batch.dead_letters, batch.next_offsets
    decode = registry().decode_checked
    for topic, partition, offset, key, value in source:
        item = classify(topic, partition, offset, key, value, expected_types[topic], decode)
        if type(item) is Event:
            events.append(item)
        else:
            letters.append(item)  # type: ignore[arg-type]
        tp = (topic, partition)
        if offset >= next_offsets.get(tp, -1):
            next_offsets[tp] = offset + 1
    batch.messages = len(source)
    return batch


def events_of(batch: Batch) -> list[Event]:
    """The batch's events derived again from its messages, less those already dead-lettered (a
    replay's fold keeps its messages, not its events; decoding is deterministic)."""
    skipped = {letter.position for letter in batch.dead_letters}
    events = []
    for topic, partition, offset, key, value in batch.source:
        if Position(topic, partition, offset) in skipped:
            continue
        item = classify(topic, partition, offset, key, value, batch.expected_types[topic])
        if isinstance(item, Event):
            events.append(item)
    return events


def reduce_isolating(projection: Any, batch: Batch, events: Sequence[Event]) -> list[Event]:
    """Set `batch.effects` to the reduction of `events`, except that an event whose reduction fails
    becomes an `unprocessable` dead letter of the batch instead of failing it; returns the events kept.

    Reduction is pure, so on a failure each event is first reduced alone into
    fresh effects (a failing event may have half-updated them) and only then
    into the batch's effects.
    """
    try:
        batch.effects = projection.reduce(events)
        return list(events)
    except Exception:
        pass
    kept: list[Event] = []
    effects = projection.reduce([])
    for event in events:
        try:
            projection.reduce([event])
        except Exception as exc:
            batch.reject(event, "unprocessable", f"{projection.name} cannot reduce it: {describe(exc)}")
            continue
        kept.append(event)
        effects = projection.reduce([event], into=effects)
    batch.effects = effects
    return kept


# Seconds a thread may hold the interpreter lock while another waits for it (CPython's default: 0.005).
SWITCH_INTERVAL = 0.0001


def tune_interpreter() -> None:
    """Tune this process's interpreter for consuming or replaying batches: collect garbage less often,
    and hand the interpreter lock over sooner.

    Garbage: a batch decodes thousands of small records (dicts, lists, tuples)
    that all live until it commits and then die together, freed by their
    reference counts (they hold no cycles). Every young-generation collection
    walks the records still alive: at CPython's default (every 700
    allocations) that cost about a tenth of the throughput; at 50,000 it still
    cost a consumer of P2 0.35-1.4 s per 200k events, depending on the load.
    At 500,000 the collector took 0.11-0.16 s in all, most of it during the
    start-up imports (bench/README.md, issue 15, fifth pass); cyclic garbage,
    rare here, waits a little longer.

    Lock: the committer thread (`committer.py`) makes a dozen or more round trips to
    PostgreSQL per batch while the reading thread decodes the next batch, which
    keeps the interpreter busy. Back from each round trip, the committer waits
    for the lock until the reader is made to drop it: at CPython's default
    5 ms, up to a tenth of a second per batch in which PostgreSQL had nothing
    to do (the convoy effect). At 0.1 ms the properties consumer ran 1.2-1.5x
    as many events/s on the same CPU (bench/README.md, issue 15, sixth pass).
    Not for the producer: its task thread and writer both compute, and
    there the short interval cost CPU and p99.

    Process-wide, so only the process's owner (the CLI, a replay worker, a
    benchmark) calls it, never the library on its own.
    """
    gc.set_threshold(500_000, 20, 20)
    sys.setswitchinterval(SWITCH_INTERVAL)
