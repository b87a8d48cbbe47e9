"""Consumer positions and dead letters in PostgreSQL, beside the projection's rows.

Both are written inside the batch's transaction, so a partition's stored
offset moves past a message only if that message's effects (or its
dead-letter row) are committed too: that is what makes a crash at any instant
harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg
from psycopg import sql

from assetlog.consumers.batch import DeadLetter
from assetlog.projections.base import table


class OffsetStore:
    """Reads and writes `consumer_offsets` and `dead_letters` for one projection."""

    def __init__(self, projection: str, schema: str | None = None) -> None:
        self.projection = projection
        self.schema = schema

    def load(self, conn: psycopg.Connection, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Stored next offsets for the given partitions (missing: never consumed)."""
        wanted = list(partitions)
        if not wanted:
            return {}
        rows = conn.execute(
            sql.SQL(
                "SELECT topic, partition, next_offset FROM {} WHERE projection = %s "
                "AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
            ).format(table(self.schema, "consumer_offsets")),
            (self.projection, [t for t, _ in wanted], [p for _, p in wanted]),
        ).fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def all(self, conn: psycopg.Connection) -> dict[tuple[str, int], int]:
        rows = conn.execute(
            sql.SQL("SELECT topic, partition, next_offset FROM {} WHERE projection = %s").format(
                table(self.schema, "consumer_offsets")),
            (self.projection,),
        ).fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def save(self, conn: psycopg.Connection, next_offsets: Mapping[tuple[str, int], int]) -> None:
        """Upsert the next offsets (one statement for the whole batch)."""
        if not next_offsets:
            return
        items = sorted(next_offsets.items())
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (projection, topic, partition, next_offset) "
                "SELECT %s, * FROM unnest(%s::text[], %s::int[], %s::bigint[]) "
                "ON CONFLICT (projection, topic, partition) DO UPDATE "
                "SET next_offset = EXCLUDED.next_offset, updated_at = now()"
            ).format(table(self.schema, "consumer_offsets")),
            (self.projection, [t for (t, _), _o in items], [p for (_, p), _o in items], [o for _, o in items]),
        )

    def record_dead_letters(self, conn: psycopg.Connection, letters: Iterable[DeadLetter]) -> None:
        rows = [
            (self.projection, d.position.topic, d.position.partition, d.position.offset, d.reason, d.detail,
             d.dead_letter_topic, d.key, d.value)
            for d in letters
        ]
        if not rows:
            return
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    'INSERT INTO {} (projection, topic, partition, "offset", reason, detail, dead_letter_topic, '
                    "message_key, message_value) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    'ON CONFLICT (projection, topic, partition, "offset") DO NOTHING'
                ).format(table(self.schema, "dead_letters")),
                rows,
            )
