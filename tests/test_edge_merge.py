"""The edge merge rule's three forms (`assetlog.projections.edge_merge`) give the same edges.

For generated dependency events (two edges' worth of keys and two times, so one edge meets
explicit and inferred events, ties on event_time and repeats), delivered in any order and
batching with redeliveries, on the real PostgreSQL:
- `reduce` in Python, over all the events at once;
- the live projection (each batch reduced, then merged into `asset_edges` by the upsert SQL);
- the SQL over `lineage_history` that makes a replay's edges (`edges_of_history`);
- the read side's "as of" edges (`assetlog.query.edges.edges_near`), at the newest event's time.
"""

from __future__ import annotations

from events_factory import Asset, TaskRun, Upstream, apply_directly, at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from test_projection_permutations import delivered

from assetlog.projections import LineageProjection, to_event
from assetlog.projections.edge_merge import edges_of_history
from assetlog.query.edges import edges_near

KEYS = ["s3://b/a.csv", "s3://b/b.csv", "pg://db/c"]


@st.composite
def batches(draw) -> list[list[tuple]]:
    """Dependency events (with their materializations) in any order, cut into batches, some delivered twice."""
    events = [event for _ in range(draw(st.integers(1, 8)))
              for event in TaskRun([Asset(draw(st.sampled_from(KEYS[1:])))],
                                   [Upstream(KEYS[0], draw(st.sampled_from(["INFERRED", "EXPLICIT"])))],
                                   time=at(draw(st.sampled_from([1, 2])))).events()]
    return delivered(draw, events)


def normalised(rows) -> list[tuple]:
    """(upstream, downstream, declared, first_seen, last_seen, last_event_id as lower-case text), sorted."""
    return sorted((*row[:5], str(row[5]).lower()) if len(row) > 5 else tuple(row) for row in rows)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches())
def test_reduce_upsert_seed_and_as_of_agree(migrated_connection, batched):
    conn = migrated_connection
    events = [to_event(t, record) for batch in batched for t, record in batch]
    in_python = normalised(e.as_tuple() for e in LineageProjection().reduce(events).edges.values())
    with conn.transaction(force_rollback=True):
        for batch in batched:
            apply_directly(conn, "lineage", batch)
        live = normalised(conn.execute("SELECT * FROM asset_edges").fetchall())
        seeded = normalised(conn.execute(edges_of_history(sql.Identifier("lineage_history"))).fetchall())
        newest = max(e.event_time for e in events)
        as_of = sorted(conn.execute(sql.SQL("SELECT near, far, declared, first_seen, last_seen FROM ({}) AS e").format(
            edges_near("downstream", sql.SQL("IS NOT NULL"), as_of=True)), {"as_of": newest}).fetchall())
    assert live == in_python
    assert seeded == in_python
    assert as_of == [row[:5] for row in in_python]


def test_the_forms_differ_where_the_rule_does(migrated_connection):
    conn = migrated_connection
    """Not vacuous: an edge declared explicitly once, then inferred later, stays explicit (live and seeded),
    with its first time and its newest event."""
    first = TaskRun([Asset("s3://b/b")], [Upstream("s3://b/a", "EXPLICIT")], time=at(1)).events()
    later = TaskRun([Asset("s3://b/b")], [Upstream("s3://b/a", "INFERRED")], time=at(2)).events()
    newest = next(r["event_id"] for t, r in later if t == "dependency")
    with conn.transaction(force_rollback=True):
        apply_directly(conn, "lineage", first)
        apply_directly(conn, "lineage", later)
        live = normalised(conn.execute("SELECT * FROM asset_edges").fetchall())
        seeded = normalised(conn.execute(edges_of_history(sql.Identifier("lineage_history"))).fetchall())
    assert live == seeded == [("s3://b/a", "s3://b/b", "explicit", at(1), at(2), newest.lower())]
