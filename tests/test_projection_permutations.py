"""Any order, split into any batches, with any redeliveries, of the same events yields identical tables.

Events cross three topics and several partitions, so the consumers see them in
no global order; the projections must not care. Hypothesis draws small event
sets where collisions are likely (few keys, few distinct times, so ties on
event_time happen), then applies them to the real PostgreSQL in two different
orders and batchings, each inside a transaction that is rolled back, and
compares every projected table row for row.
"""

from __future__ import annotations

import uuid
import zlib

from events_factory import PROJECTED_TABLES, Asset, TaskRun, Upstream, apply_directly, at, props
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from assetlog.projections import Position

KEYS = ["s3://b/a.csv", "s3://b/b.csv", "pg://db/c", "s3://b/d.csv"]
TIMES = [at(t) for t in (1, 2, 3)]

properties = st.one_of(st.none(), st.builds(
    props, st.sampled_from(["A", "B", None]), st.sampled_from(["d1", None]),
    st.sampled_from([["x"], ["x", "y"], None]), st.sampled_from(["https://u", None])))


@st.composite
def task_runs(draw) -> TaskRun:
    key = draw(st.sampled_from(KEYS))
    upstreams = draw(st.lists(st.builds(Upstream, st.sampled_from([k for k in KEYS if k != key]),
                                        st.sampled_from(["INFERRED", "EXPLICIT"]), properties),
                              max_size=2, unique_by=lambda u: u.key))
    return TaskRun([Asset(key, draw(properties))], upstreams,
                   metadata={key: {"n": draw(st.integers(0, 3))}} if draw(st.booleans()) else {},
                   status=draw(st.sampled_from(["SUCCEEDED", "FAILED"])), time=draw(st.sampled_from(TIMES)),
                   by=draw(st.sampled_from([None, "dbt"])))


@st.composite
def deliveries(draw):
    """The same positioned events twice: each in its own order, batches and redeliveries."""
    runs = draw(st.lists(task_runs(), min_size=1, max_size=6))
    events = []
    for t, record in (e for run in runs for e in run.events()):
        if draw(st.booleans()):  # upper-case ids are valid UUIDs too, and must order like PostgreSQL's uuid
            record["event_id"] = record["event_id"].upper()
        key = record.get("downstream_key") or record["asset_key"]
        events.append((t, record, Position(f"topic.{t}", zlib.crc32(key.encode()) % 3, len(events))))

    return delivered(draw, events), delivered(draw, events)


def delivered(draw, events: list) -> list[list]:
    """`events` in any order, some delivered again, cut into batches (`draw` of a composite strategy)."""
    order = draw(st.permutations(events))
    repeats = draw(st.lists(st.sampled_from(events), max_size=4))  # the same message delivered again
    order = order + repeats
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=4)))
    bounds = [0, *cuts, len(order)]
    return [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def dump(conn) -> dict[str, list[tuple]]:
    return {name: conn.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(
        sql.Identifier(name), sql.SQL(order))).fetchall() for name, order in PROJECTED_TABLES.items()}  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deliveries())
def test_any_order_batching_and_redelivery_yields_identical_tables(migrated_connection, delivery_pair):
    conn = migrated_connection
    results = []
    for batches in delivery_pair:
        with conn.transaction(force_rollback=True):
            for batch in batches:
                apply_directly(conn, "properties", batch)
                apply_directly(conn, "lineage", batch)
            results.append(dump(conn))
    first, second = results
    for name in PROJECTED_TABLES:
        assert first[name] == second[name], name
    assert first["lineage_history"], "nothing was projected"
    # Equal to each other is not enough (a projection that wrote nothing, or the same wrong rows, would
    # pass): both must hold the rows the rules give, computed here without the projection's code.
    assert expected_rows(delivery_pair[0]) == {
        "history": sorted(str(r[0]) for r in first["lineage_history"]),
        "properties": {r[0]: (r[1], r[2], r[3], r[4], str(r[6])) for r in first["asset_properties"]},
        "materialization": {r[0]: str(r[4]) for r in first["assets"] if r[4] is not None},
    }


def expected_rows(batches) -> dict:
    """The rules, stated directly: one history row per event id; per key, the properties of the newest
    (event_time, event_id as a uuid) event carrying some, and the newest materialization."""
    events = {record["event_id"].lower(): (t, record) for batch in batches for t, record, _p in batch}
    newest_properties: dict[str, tuple] = {}
    newest_materialization: dict[str, tuple] = {}

    def offer(table: dict, key: str, order: tuple, value) -> None:
        if key not in table or order > table[key][0]:
            table[key] = (order, value)

    for event_id, (t, record) in events.items():
        order = (record["event_time"], uuid.UUID(event_id))
        if t == "materialization":
            offer(newest_materialization, record["asset_key"], order, event_id)
            given, key = record["properties"], record["asset_key"]
        elif t == "dependency":
            given, key = record["upstream_properties"], record["upstream_key"]
        else:
            continue
        if given is not None:
            offer(newest_properties, key, order, (given["name"], given["description"], given["owners"],
                                                  given["url"], event_id))
    return {"history": sorted(events), "properties": {k: v for k, (_o, v) in newest_properties.items()},
            "materialization": {k: v for k, (_o, v) in newest_materialization.items()}}
