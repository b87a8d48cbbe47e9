"""Generative: hostile values in every field of every event schema, mixed into valid traffic.

Each example publishes a few valid task runs and hostile messages (see
`hostile_events.py`: written at the encoding level, as a hostile or buggy
producer could) to the real broker, while both real consumers run into a real
database. Invariant, per example: both consumers reach the end of the topics;
every valid event is projected; every other message is dead-lettered exactly
once per projection, with a storable reason and detail; a hostile value whose
class decides its fate ("a NUL is never stored", "a bidi mark is data") meets
it. At the end every dead letter has exactly one copy per projection in its
`.dlq` topic and `replay all --check` finds no drift and no consumer behind.
"""

from __future__ import annotations

import psycopg
import pytest
from events_factory import Publisher, end_offsets
from hostile_events import Hostile, hostile_message, known_wedges, valid_traffic
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from replay_support import LiveConsumer, replay
from test_fault_fuzz import dead_letter_copies

from assetlog.consumers import classify, event_types_by_topic
from assetlog.projections import Event, migrate

PROJECTIONS = ("properties", "lineage")


class RecordingPublisher(Publisher):
    """Remembers each message's value, so the test can decode what it sent."""

    def raw(self, topic, key, value):  # type: ignore[override]
        index = super().raw(topic, key, value)
        self.sent.append(value)
        return index

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.sent: list[bytes | None] = []


class HostileWorld:
    """Both live consumers on one world; each example's messages are checked once they caught up."""

    def __init__(self, world) -> None:
        self.world = world
        self.publisher = RecordingPublisher(world.settings)
        self.consumers = [LiveConsumer(world, name, batch_size=200).__enter__() for name in PROJECTIONS]
        self.valid_index = 0
        self.dead: set[tuple[str, int, int]] = set()
        self.classes: dict[str, dict[str, int]] = {}
        self.expected_types = event_types_by_topic(world.settings.topics)

    def close(self) -> None:
        for consumer in self.consumers:
            consumer.stop()

    def run_example(self, hostile: list[Hostile], valid_runs: int) -> None:
        valid: list[int] = []
        placed: list[tuple[int, Hostile]] = []
        for i, item in enumerate(hostile):
            for _ in range(valid_runs if i % 2 == 0 else 0):
                self.valid_index += 1
                valid += [self.publisher.event(t, r) for t, r in valid_traffic(self.valid_index)]
            placed.append((self.publisher.raw(item.topic, item.key, item.value), item))
        self.publisher.flush()
        positions = self.publisher.positions
        ends = end_offsets(p for p in positions if p is not None)
        for consumer in self.consumers:
            consumer.wait_for(self.world.dsn, ends, timeout=90)  # both reach the end: nothing wedges

        with psycopg.connect(self.world.dsn) as conn:
            def letters(p) -> dict[str, list[tuple]]:
                rows = conn.execute('SELECT projection, reason, detail FROM dead_letters WHERE topic = %s AND '
                                    'partition = %s AND "offset" = %s', (p.topic, p.partition, p.offset)).fetchall()
                return {name: [r for r in rows if r[0] == name] for name in PROJECTIONS}

            def projected(event: Event) -> bool:
                history = conn.execute("SELECT count(*) FROM lineage_history WHERE event_id = %s",
                                       (event.event_id,)).fetchone()[0]
                asset = conn.execute("SELECT count(*) FROM assets WHERE key = %s", (event.asset_key,)).fetchone()[0]
                return history == 1 and asset == 1

            for index in valid:
                p = positions[index]
                assert letters(p) == {name: [] for name in PROJECTIONS}, p
                item = classify(p.topic, p.partition, p.offset, None, self._value(index), self.expected_types[p.topic])
                assert isinstance(item, Event) and projected(item), p
            for index, item in placed:
                p = positions[index]
                found = letters(p)
                decoded = classify(p.topic, p.partition, p.offset, item.key, item.value, self.expected_types[p.topic])
                if found["properties"] or found["lineage"]:
                    outcome = "dead"
                    for name in PROJECTIONS:
                        assert len(found[name]) == 1, (item, found)  # exactly once per projection
                        _projection, reason, detail = found[name][0]
                        assert reason and detail and "\x00" not in detail
                    assert found["properties"][0][1] == found["lineage"][0][1], (item, found)
                    self.dead.add((p.topic, p.partition, p.offset))
                else:
                    outcome = "valid"
                    assert isinstance(decoded, Event) and projected(decoded), (item, decoded)
                assert item.expect in (None, outcome), (item, outcome, found)
                tally = self.classes.setdefault(f"{item.kind} ({item.event_type})", {"dead": 0, "valid": 0})
                tally[outcome] += 1

    def _value(self, index: int) -> bytes:
        value = self.publisher.sent[index]
        assert value is not None
        return value

    def check_dead_letter_topics(self) -> None:
        copies: dict[tuple[str, str, int, int], int] = {}
        for message in dead_letter_copies(self.world.settings):
            headers = {k: v.decode() for k, v in message.headers()}
            where = (headers["assetlog.projection"], headers["assetlog.original.topic"],
                     int(headers["assetlog.original.partition"]), int(headers["assetlog.original.offset"]))
            copies[where] = copies.get(where, 0) + 1
        assert copies == {(name, *p): 1 for p in self.dead for name in PROJECTIONS}


def run_generative(world, examples: int) -> dict[str, dict[str, int]]:
    migrate(world.dsn)
    state = HostileWorld(world)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=examples <= 50,
              phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
    @given(hostile=st.lists(hostile_message(world.settings), min_size=1, max_size=6),
           valid_runs=st.integers(0, 2))
    @example(hostile=known_wedges(world.settings), valid_runs=1)
    def one_example(hostile: list[Hostile], valid_runs: int) -> None:
        state.run_example(hostile, valid_runs)

    try:
        one_example()
    finally:
        state.close()
    state.check_dead_letter_topics()
    check = replay(world, "all", "--check")
    assert check["drift"] is False and check["behind"] == [], check
    return state.classes


def test_hostile_values_in_every_field_are_dead_lettered_once_or_projected_and_nothing_wedges(isolated):
    classes = run_generative(isolated, examples=25)
    report(classes)
    assert sum(t["dead"] for t in classes.values()) > 10 and sum(t["valid"] for t in classes.values()) > 5


@pytest.mark.slow
def test_hostile_values_long_run(isolated):
    report(run_generative(isolated, examples=400))


def report(classes: dict[str, dict[str, int]]) -> None:
    """What each hostile class came to (shown with -s)."""
    for name, tally in sorted(classes.items()):
        print(f"{name}: {tally['dead']} dead-lettered, {tally['valid']} projected")
