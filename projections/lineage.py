"""The lineage projection: append-only `lineage_history` and the `asset_edges` graph.

History keeps one row per event id; a redelivered event is ignored, and within
a batch the lowest Kafka position wins, which is the first delivery since a
partition is read in order. The history is partitioned by event_time, so its
key is (event_id, event_time), and PostgreSQL cannot make event_id alone unique
across partitions: `lineage_event_ids` (event_id primary key, event_time) does.
Each batch first COPYs its ids there; only when that meets a stored id are the
batch's ids looked up (one index, not one per partition): the same time is a
redelivery, skipped; another event_time (or two in one batch) is refused
(`RefusedEvent`, reason `conflicting-event-time`) and dead-lettered by the
writer; the first one stays. Edges merge order-independently by the rule in
`edge_merge.py` (explicit if any event said so, first/last seen as min/max
event_time, the newest dependency event by (event_time, event_id)).

A bulk load (a replay's first read) sets `edges_later`: batches then write the
history alone, and `derive_edges` makes every edge from the loaded history in one
GROUP BY, by the same rule, instead of an upsert per batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from assetlog.projections.base import RefusedEvent, copy_rows, copy_to_temp, staged_select, table, unnest_rows
from assetlog.projections.edge_merge import (
    EDGES_COLUMNS,
    EdgeRow,
    edges_of_history,
    merge_dependency,
    upsert_edges,
)
from assetlog.projections.events import Event, event_payload
from assetlog.projections.partitions import MonthlyPartitions
from assetlog.schemas import DEPENDENCY

HISTORY_COLUMNS = (
    ("event_id", "uuid"), ("event_type", "text"), ("event_time", "timestamptz"), ("asset_key", "text"),
    ("upstream_key", "text"), ("status", "text"), ("materialization_event_id", "uuid"), ("flow_run_id", "uuid"),
    ("flow_name", "text"), ("task_run_id", "uuid"), ("task_name", "text"), ("payload", "jsonb"),
    ("kafka_topic", "text"), ("kafka_partition", "integer"), ("kafka_offset", "bigint"),
)

_TIME = 2  # event_time's place in a history row
_REGISTRY_COLUMNS = (("event_id", "uuid"), ("event_time", "timestamptz"))

# Sorts a missing position (events applied without Kafka) after any real one.
_NO_POSITION = ("\uffff", 0, 0)


@dataclass(slots=True)
class LineageEffects:
    """History rows by event id (first delivery kept: with its position, see `_position_key`) and
    merged edges by (upstream, downstream)."""

    history: dict[str, tuple[tuple[str, int, int], tuple[object, ...]]] = field(default_factory=dict)
    edges: dict[tuple[str, str], EdgeRow] = field(default_factory=dict)
    conflicts: list[Event] = field(default_factory=list)  # an id already in `history` with another time

    def __len__(self) -> int:
        return len(self.history) + len(self.edges)


def _position_key(event: Event) -> tuple[str, int, int]:
    return event.position or _NO_POSITION


def history_row(event: Event) -> tuple[object, ...]:
    """The `lineage_history` row of one event, as `copy_rows` takes it (payload as JSON bytes)."""
    record = event.record
    run = record["run"]
    position = event.position
    return (
        event.event_id, event.event_type, event.event_time, event.asset_key,
        record.get("upstream_key") if event.event_type == DEPENDENCY else None,
        record["status"], event.materialization_event_id,
        run.get("flow_run_id"), run.get("flow_name"), run["task_run_id"], run["task_name"],
        event_payload(event),
        position.topic if position else None, position.partition if position else None,
        position.offset if position else None,
    )


class LineageProjection:
    """Maintains `lineage_history` and `asset_edges` (consumer group `<prefix>.lineage`)."""

    name = "lineage"
    tables = ("lineage_history", "asset_edges")
    support_tables = ("lineage_event_ids",)
    # Tables whose primary key a bulk load (a replay's shadow) may build after the rows: the history is
    # written by plain COPY, never upserted, and lineage_event_ids keeps its event ids unique meanwhile;
    # the edges are made once, by `derive_edges`, after the load.
    keys_after_load = ("lineage_history", "asset_edges")

    def __init__(self, schema: str | None = None) -> None:
        self.schema = schema
        self.partitions = MonthlyPartitions(schema)
        # During a bulk load: batches leave the edges out, and `derive_edges` makes them from the loaded
        # history. One GROUP BY of a million events' history (1.4-2.5 s, beside the index builds) replaces
        # the merges and upserts that made the replay's read 1.5-3.8 s longer (bench/README.md, issue 15,
        # eleventh pass).
        self.edges_later = False

    def reduce(self, events: Iterable[Event], into: LineageEffects | None = None) -> LineageEffects:
        effects = into if into is not None else LineageEffects()
        for event in events:
            seen = effects.history.get(event.event_id)
            position = _position_key(event)
            if seen is not None and seen[1][_TIME] != event.event_time:
                effects.conflicts.append(event)
            elif seen is None or position < seen[0]:
                effects.history[event.event_id] = (position, history_row(event))
            if event.event_type != DEPENDENCY or self.edges_later:
                continue
            record = event.record
            merge_dependency(effects.edges, (record["upstream_key"], event.asset_key),
                             record["declared"] == "EXPLICIT", event.sort_key)
        return effects

    def apply(self, conn: psycopg.Connection, effects: LineageEffects) -> None:
        if effects.conflicts:  # the writer splits the batch until each id's first time is stored alone
            event = effects.conflicts[0]
            raise RefusedEvent("conflicting-event-time", f"event {event.event_id} met twice in one batch with "
                                                         "different event times")
        with conn.transaction():
            if effects.history:
                self.partitions.ensure(conn, (row[_TIME] for _position, row in effects.history.values()))
                self._append_history(conn, effects.history)
            if effects.edges:
                batch, arrays = unnest_rows(EDGES_COLUMNS, (edge.as_tuple() for edge in effects.edges.values()))
                conn.execute(upsert_edges(table(self.schema, "asset_edges"), batch), arrays)

    def _append_history(self, conn: psycopg.Connection,
                        history: dict[str, tuple[tuple[str, int, int], tuple[object, ...]]]) -> None:
        """Register the batch's ids, then COPY its new rows straight into lineage_history.

        The registry's primary key is the one place an id stored with another
        event_time can be seen without reading every partition. Should the
        history hold a row the registry lacks (written by an older consumer
        during the upgrade), the COPY fails on the primary key and the batch
        falls back to a staged INSERT ... ON CONFLICT DO NOTHING: same result.
        """
        fresh = [row for _position, row in history.values()]
        registry = table(self.schema, "lineage_event_ids")
        try:
            with conn.transaction(), conn.cursor() as cur:
                copy_rows(cur, registry, _REGISTRY_COLUMNS, [(row[0], row[_TIME]) for row in fresh])
        except psycopg.errors.UniqueViolation:
            fresh = self._not_stored(conn, fresh)
            if not fresh:
                return
            conn.execute(sql.SQL("INSERT INTO {} (event_id, event_time) SELECT * FROM unnest(%s::uuid[], "
                                 "%s::timestamptz[])").format(registry),
                         ([row[0] for row in fresh], [row[_TIME] for row in fresh]))
        try:
            with conn.transaction(), conn.cursor() as cur:
                copy_rows(cur, table(self.schema, "lineage_history"), HISTORY_COLUMNS, fresh)
        except psycopg.errors.UniqueViolation:
            copy_to_temp(conn, "assetlog_batch_history", HISTORY_COLUMNS, fresh)
            conn.execute(self._insert_history())

    def _not_stored(self, conn: psycopg.Connection, rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        """The rows whose event id is not registered yet; RefusedEvent if one is registered with another time."""
        stored = dict(conn.execute(
            sql.SQL("SELECT event_id::text, event_time FROM {} WHERE event_id = ANY(%s::uuid[])").format(
                table(self.schema, "lineage_event_ids")), ([row[0] for row in rows],)).fetchall())
        for row in rows:
            event_id, event_time = row[0], row[_TIME]
            if event_id in stored and stored[event_id] != event_time:
                raise RefusedEvent("conflicting-event-time", (
                    f"event {event_id} is stored with event_time {stored[event_id].isoformat()}; "
                    f"this copy says {event_time.isoformat()} (an event id keeps its time; the first one "
                    "stored stays)"))
        return [row for row in rows if row[0] not in stored]

    def _insert_history(self) -> sql.Composed:
        columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in HISTORY_COLUMNS)
        return sql.SQL(
            "INSERT INTO {target} ({columns}) SELECT {staged} FROM assetlog_batch_history ORDER BY event_id "
            "ON CONFLICT DO NOTHING"
        ).format(target=table(self.schema, "lineage_history"), columns=columns, staged=staged_select(HISTORY_COLUMNS))


def seed_from_history(conn: psycopg.Connection, source_schema: str, target_schema: str,
                      before: dict[tuple[str, int], int]) -> int:
    """Start a rebuild of the lineage tables from the history read before `before` offsets.

    `replay lineage --since` re-reads only the tail of the topics: the history
    rows of earlier messages (below `before[(topic, partition)]`, or read
    without Kafka) are copied from `source_schema`, with their ids registered;
    once the tail is loaded too, `derive_edges` makes the edges from the whole
    history. Returns the number of history rows copied.
    """
    items = sorted(before.items())
    topics, partitions, offsets = [t for (t, _), _o in items], [p for (_, p), _o in items], [o for _, o in items]
    copied = conn.execute(sql.SQL(
        "INSERT INTO {target} SELECT * FROM {source} AS h WHERE NOT EXISTS (SELECT FROM "
        "unnest(%s::text[], %s::int[], %s::bigint[]) AS s(topic, part, next_offset) "
        "WHERE h.kafka_topic = s.topic AND h.kafka_partition = s.part AND h.kafka_offset >= s.next_offset)"
    ).format(target=table(target_schema, "lineage_history"), source=table(source_schema, "lineage_history")),
        (topics, partitions, offsets)).rowcount
    conn.execute(sql.SQL("INSERT INTO {} (event_id, event_time) SELECT event_id, event_time FROM {}").format(
        table(target_schema, "lineage_event_ids"), table(target_schema, "lineage_history")))
    return copied


def derive_edges(conn: psycopg.Connection, schema: str | None) -> int:
    """Make `schema`'s asset_edges (empty) from its lineage_history, with the projection's own merge
    rule (`edge_merge.edges_of_history`): what the per-batch merges of the same events would have made,
    in any order. Returns the number of edges."""
    return conn.execute(sql.SQL("INSERT INTO {edges} ({columns}) {select}").format(
        edges=table(schema, "asset_edges"),
        columns=sql.SQL(", ").join(sql.Identifier(name) for name, _ in EDGES_COLUMNS),
        select=edges_of_history(table(schema, "lineage_history")))).rowcount
