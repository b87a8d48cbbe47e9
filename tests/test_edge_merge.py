"""The edge merge rule's three forms (`assetlog.projections.edge_merge`) give the same edges.

For generated dependency events (two edges' worth of keys and two times, so one edge meets
explicit and inferred events, ties on event_time and repeats), delivered in any order and
batching with redeliveries, on the real PostgreSQL:
- `reduce` in Python, over all the events at once;
- the live projection (each batch reduced, then merged into `asset_edges` by the upsert SQL);
- the SQL over `lineage_history` that makes a replay's edges (`edges_of_history`);
- the read side's "as of" edges (`assetlog.query.edges.edges_near`), at the newest event's time;
- the walks' "as of" edges (`links_near`, from `asset_edges` and its explicit_since) against that
  history form, at every time, also for edges stored before migration 0010 (no explicit_since).
"""

from __future__ import annotations

from events_factory import Asset, TaskRun, Upstream, apply_directly, at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from test_projection_permutations import delivered

from assetlog.projections import LineageProjection, to_event
from assetlog.projections.edge_merge import edges_of_history
from assetlog.projections.lineage import derive_edges
from assetlog.query.edges import edges_near, links_near

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
    """(upstream, downstream, declared, first_seen, last_seen, last_event_id as lower-case text, explicit_since),
    sorted."""
    return sorted((*row[:5], str(row[5]).lower(), *row[6:]) if len(row) > 5 else tuple(row) for row in rows)


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
        links = walk_links_as_of(conn, [at(0), *sorted({e.event_time for e in events})])
        conn.execute("UPDATE asset_edges SET explicit_since = NULL WHERE declared = 'explicit'")
        legacy_links = walk_links_as_of(conn, [at(0), *sorted({e.event_time for e in events})])
    assert live == in_python
    assert seeded == in_python
    assert as_of == [row[:5] for row in in_python]
    assert links == legacy_links
    assert all(got == expected for got, expected in links.values())


def walk_links_as_of(conn, times) -> dict:
    """Per time: the walks' (near, far, declared) from asset_edges, and the same from the history."""
    def rows(form):
        return sorted(conn.execute(sql.SQL("SELECT near, far, declared FROM ({}) AS e").format(
            form("downstream", sql.SQL("IS NOT NULL"), as_of=True)), {"as_of": time}).fetchall())
    found = {}
    for time in times:
        found[time] = (rows(links_near), rows(edges_near))
    return found


def test_an_edge_stored_before_explicit_since_keeps_it_unknown(migrated_connection):
    """An explicit edge without explicit_since (stored before migration 0010) merged with a newer explicit
    event: its first explicit event is older, so the batch's time must not be taken for it; as of a time
    between the two, the walks' form finds the older event in the history."""
    conn = migrated_connection
    first = TaskRun([Asset("s3://b/b")], [Upstream("s3://b/a", "EXPLICIT")], time=at(1)).events()
    later = TaskRun([Asset("s3://b/b")], [Upstream("s3://b/a", "EXPLICIT")], time=at(3)).events()
    with conn.transaction(force_rollback=True):
        apply_directly(conn, "lineage", first)
        conn.execute("UPDATE asset_edges SET explicit_since = NULL")
        apply_directly(conn, "lineage", later)
        stored = conn.execute("SELECT declared, explicit_since, last_seen FROM asset_edges").fetchall()
        links = walk_links_as_of(conn, [at(2)])
    assert stored == [("explicit", None, at(3))]
    assert links[at(2)][0] == links[at(2)][1] == [("s3://b/a", "s3://b/b", "explicit")]


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
    assert live == seeded == [("s3://b/a", "s3://b/b", "explicit", at(1), at(2), newest.lower(), at(1))]


def test_replay_check_compares_an_old_edge_by_its_history(migrated_connection):
    """`replay --check` (compare_table): a live explicit edge stored before migration 0010 (no explicit_since)
    matches its rebuild, which has it; one whose explicit_since is wrong does not."""
    from assetlog.projections.compare import compare_table

    conn = migrated_connection
    events = [*TaskRun([Asset("s3://b/b")], [Upstream("s3://b/a", "INFERRED")], time=at(1)).events(),
              *TaskRun([Asset("s3://b/b")], [Upstream("s3://b/a", "EXPLICIT")], time=at(2)).events(),
              *TaskRun([Asset("s3://b/c")], [Upstream("s3://b/a", "INFERRED")], time=at(3)).events()]
    with conn.transaction(force_rollback=True):
        apply_directly(conn, "lineage", events)
        conn.execute("CREATE SCHEMA rebuilt")
        for name in ("lineage_history", "asset_edges"):
            conn.execute(sql.SQL("CREATE TABLE rebuilt.{0} (LIKE public.{0} INCLUDING ALL)").format(
                sql.Identifier(name)))
        conn.execute("INSERT INTO rebuilt.lineage_history SELECT * FROM public.lineage_history")
        derive_edges(conn, "rebuilt")
        conn.execute("UPDATE asset_edges SET explicit_since = NULL")
        unknown = compare_table(conn, "public", "rebuilt", "asset_edges")
        conn.execute("UPDATE asset_edges SET explicit_since = %s WHERE declared = 'explicit'", (at(3),))
        wrong = compare_table(conn, "public", "rebuilt", "asset_edges")
    assert (unknown.live_rows, unknown.drifted) == (2, False)
    assert (wrong.different, wrong.missing, wrong.extra) == (1, 0, 0)
