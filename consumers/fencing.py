"""The generation fence between `assetlog replay` and the live consumers.

A replay swaps a projection's tables and its stored offsets in one
transaction that also advances the projection's row in
`projection_generations`. A live consumer remembers the generation it read
together with its offsets, and every batch transaction starts by re-reading
it FOR SHARE: while a swap is committing, the batch waits on the row lock;
after it, the batch sees a newer generation and is refused (`Fenced`), so
neither its effects nor its offsets land on the swapped tables. The runner
then drops what it had in flight and seeks to the offsets the replay stored.

The same row lock is how a replay pauses the live consumers of a projection
for a final catch-up or a comparison: `pause` holds it FOR UPDATE.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg


class Fenced(Exception):
    """A replay swapped the projection's tables since this consumer read its offsets."""

    def __init__(self, projection: str, expected: int, found: int) -> None:
        super().__init__(f"{projection}: generation {found} replaced generation {expected} (a replay swapped "
                         "the tables); re-reading the stored offsets")
        self.projection = projection
        self.expected = expected
        self.found = found


class GenerationFence:
    """Reads, checks and advances one projection's generation, inside the caller's transaction."""

    def __init__(self, projection: str) -> None:
        self.projection = projection

    def hold(self, conn: psycopg.Connection) -> int:
        """The current generation, share-locked until the transaction ends (creates the row if missing)."""
        row = conn.execute(
            "SELECT generation FROM projection_generations WHERE projection = %s FOR SHARE", (self.projection,)
        ).fetchone()
        if row is None:
            conn.execute("INSERT INTO projection_generations (projection) VALUES (%s) ON CONFLICT DO NOTHING",
                         (self.projection,))
            row = conn.execute(
                "SELECT generation FROM projection_generations WHERE projection = %s FOR SHARE",
                (self.projection,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def check(self, conn: psycopg.Connection, expected: int) -> None:
        """Raise `Fenced` unless the generation is still `expected`; holds it until the transaction ends."""
        found = self.hold(conn)
        if found != expected:
            raise Fenced(self.projection, expected, found)


def pause(conn: psycopg.Connection, projections: Iterable[str]) -> dict[str, int]:
    """Lock the projections' generation rows FOR UPDATE: their live consumers' next commits wait
    until the caller's transaction ends. Returns the generations (rows created if missing)."""
    names = sorted(set(projections))  # one order for every locker: no deadlock between replays
    conn.execute(
        "INSERT INTO projection_generations (projection) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
        (names,),
    )
    rows = conn.execute(
        "SELECT projection, generation FROM projection_generations WHERE projection = ANY(%s) "
        "ORDER BY projection FOR UPDATE",
        (names,),
    ).fetchall()
    return {name: int(generation) for name, generation in rows}


def advance(conn: psycopg.Connection, projections: Iterable[str]) -> dict[str, int]:
    """Advance the projections' generations (in the swap's transaction); returns the new ones."""
    rows = conn.execute(
        "UPDATE projection_generations SET generation = generation + 1, replayed_at = now() "
        "WHERE projection = ANY(%s) RETURNING projection, generation",
        (sorted(set(projections)),),
    ).fetchall()
    return {name: int(generation) for name, generation in rows}
