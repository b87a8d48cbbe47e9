"""Write one batch in the caller's transaction: its effects, its dead letters and its offsets.

The one write path of the live consumers and of replay, so both skip exactly
the same events. A batch whose effects PostgreSQL refuses on data (a
`DATA_ERRORS` failure: a value it cannot store, an index row too large, ...)
is not retried as a whole, which would fail again forever: it is bisected.
Each half is applied in a savepoint of the batch's transaction; a half that
fails is split again, down to single events, and each event that fails alone
is dead-lettered (reason `unstorable`) while every other event is applied.
The projections' merges are commutative and idempotent, so applying the
halves one after the other gives the rows the whole batch would have given.
A batch with k poison events among n costs about 2·k·log2(n) extra applies.

Dead-letter rows cannot fail on what a message holds: their text is made
storable when the letter is made (`batch.storable`), and should a row still be
refused, it is written without the message (which stays in its topic).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from assetlog.consumers.batch import Batch, DeadLetter, describe, events_of, reduce_isolating
from assetlog.consumers.offsets import OffsetStore
from assetlog.consumers.retry import DATA_ERRORS
from assetlog.projections.base import RefusedEvent
from assetlog.projections.events import Event

log = logging.getLogger("assetlog.consumers")

Publish = Callable[[Sequence[DeadLetter]], None]


def bisect(conn: psycopg.Connection, projection: Any, events: Sequence[Event]) -> list[tuple[Event, BaseException]]:
    """Apply `events`, halving on data errors; returns the events that fail alone, with their error."""
    try:
        effects = projection.reduce(events)
        with conn.transaction():
            projection.apply(conn, effects)
        return []
    except DATA_ERRORS as exc:
        if len(events) <= 1:
            return [(event, exc) for event in events]
    middle = len(events) // 2
    return bisect(conn, projection, events[:middle]) + bisect(conn, projection, events[middle:])


def record_dead_letters(conn: psycopg.Connection, offsets: OffsetStore, letters: Sequence[DeadLetter]) -> None:
    """Write the dead-letter rows; a row refused on data is written again without the message."""
    if not letters:
        return  # most batches: no savepoint round trips
    try:
        with conn.transaction():
            offsets.record_dead_letters(conn, letters)
        return
    except DATA_ERRORS:
        pass
    for letter in letters:
        try:
            with conn.transaction():
                offsets.record_dead_letters(conn, [letter])
        except DATA_ERRORS as exc:
            bare = DeadLetter(letter.position, None, None, letter.reason,
                              f"{letter.detail} [the message itself could not be stored here ({describe(exc)}); "
                              f"it is still in {letter.position.topic} at this offset]")
            offsets.record_dead_letters(conn, [bare])


class TrackedWriter:
    """Writes batches of one projection, with its offsets, inside the caller's transaction."""

    def __init__(self, projection: Any, offsets: OffsetStore) -> None:
        self.projection = projection
        self.offsets = offsets

    def write(self, conn: psycopg.Connection, batch: Batch, publish: Publish | None = None) -> None:
        """Apply the batch (bisecting on data errors), copy its dead letters with `publish` (before the
        transaction commits), record them and save the offsets.

        Events found poisonous are moved into `batch.dead_letters` and `batch.effects` is cleared, so
        a retry of the same batch after an infrastructure failure neither meets them again nor copies
        their dead letters twice.
        """
        if batch.effects is None:
            batch.events = reduce_isolating(self.projection, batch, events_of(batch))
        try:
            with conn.transaction():
                self.projection.apply(conn, batch.effects)
        except DATA_ERRORS as exc:
            log.warning("%s: PostgreSQL refused a batch of %d events (%s); bisecting it to find the event(s) "
                        "at fault", self.projection.name, len(batch.events), describe(exc))
            events = events_of(batch)
            poison = bisect(conn, self.projection, events)
            rejected = {id(event) for event, _error in poison}
            for event, error in poison:
                if isinstance(error, RefusedEvent):
                    batch.reject(event, error.reason, f"{self.projection.name}: {error.detail}")
                else:
                    batch.reject(event, "unstorable", f"{self.projection.name}: PostgreSQL refused its rows: "
                                                      f"{describe(error)}")
            batch.events = [event for event in events if id(event) not in rejected]
            batch.effects = None
        if publish is not None:
            publish(batch.dead_letters)
        record_dead_letters(conn, self.offsets, batch.dead_letters)
        self.offsets.save(conn, batch.next_offsets)
