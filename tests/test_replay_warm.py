"""A replay warms what its swap brought in (the read path's relations of the swapped tables) into shared
buffers, as `assetlog db warm` would; `--no-warm` leaves them out; a warm that cannot run never fails the
replay. On the real broker and PostgreSQL, with pg_buffercache showing what shared buffers hold."""

from __future__ import annotations

import re
from dataclasses import replace

import psycopg
from conftest import Isolated, drop_role, dsn_as_role
from events_factory import publish
from psycopg import conninfo, sql
from replay_support import assetlog, in_shared_buffers, realistic_runs

from assetlog.compose.processes import free_port
from assetlog.consumers.replay import Replay
from assetlog.projections import migrate
from assetlog.projections.warm import READ_PATH, warm_or_say_why, warm_read_path, warm_standby_or_say_why
from assetlog.query import graph

EDGE_INDEXES = ["asset_edges_upstream", "asset_edges_downstream"]
PROPERTIES_PATH = ["assets_key_hash", "asset_properties_key_hash", "assets", "asset_properties"]


def has_prewarm(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm'").fetchone() is not None


def test_a_replay_warms_what_it_swapped_in_and_no_warm_leaves_it_out(isolated: Isolated) -> None:
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        # Autovacuum's small ring could read a tiny index into the buffers on its own; a replay mirrors
        # this storage parameter, so the swapped-in tables stay as the replay leaves them.
        for table in ("asset_edges", "assets", "asset_properties"):
            conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(sql.Identifier(table)))
    publish(isolated.settings, realistic_runs(1500, seed=61))

    off = Replay(isolated.settings, "all", warm=False, workers=1).run().as_dict()
    assert off["warm"] == {"warmed": False, "reason": "turned off (--no-warm)",
                           "not_warmed": [name for name, *_ in READ_PATH]}
    assert not has_prewarm(isolated.dsn)  # the warm creates it (this role may): it never ran
    cold = in_shared_buffers(isolated.dsn)
    # The covering indexes are built after the load, past shared buffers: nothing of them is cached,
    # which is what the warm fixes (this check fails if the replay does not warm).
    assert all(cold[name][0] < cold[name][1] for name in EDGE_INDEXES), cold

    done = assetlog(isolated, "replay", "lineage")
    assert done.code == 0 and done.stderr == "", done.stderr
    assert re.search(r"; warmed [\d.]+ MiB \(asset_edges_upstream, asset_edges_downstream\) into shared buffers "
                     r"in [\d.]+s$", done.stdout.strip()), done.stdout
    warm = in_shared_buffers(isolated.dsn)
    assert all(warm[name][0] == warm[name][1] for name in EDGE_INDEXES), warm

    properties = Replay(isolated.settings, "properties", workers=1).run().as_dict()["warm"]
    assert properties["warmed"] and [r["relation"] for r in properties["relations"]] == PROPERTIES_PATH
    assert all(r["loaded"] for r in properties["relations"]) and properties["skipped"] == []
    assert properties["loaded_mib"] == round(sum(r["mib"] for r in properties["relations"]), 1)
    warm = in_shared_buffers(isolated.dsn)
    assert all(cached == blocks > 0 for cached, blocks in warm.values()), warm


def test_a_role_that_may_not_create_pg_prewarm_gets_its_replay_and_one_line(isolated: Isolated) -> None:
    """The replay's role owns the tables but is no superuser, so it may not create pg_prewarm (not a
    trusted extension): the swap stands, exit 0, and stderr says in one line what was not warmed and how."""
    owner = f"assetlog_test_replayer_{isolated.database[-10:]}"
    with psycopg.connect(isolated.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(isolated.database), sql.Identifier(owner)))
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(owner)))
    try:
        dsn = dsn_as_role(isolated.dsn, owner)
        migrate(dsn)
        publish(isolated.settings, realistic_runs(300, seed=62))
        as_owner = Isolated(settings=replace(isolated.settings, postgres_dsn=dsn), database=isolated.database)
        done = assetlog(as_owner, "replay", "lineage")
        assert done.code == 0, done.stderr
        assert done.stdout.startswith("replay lineage: ") and "swapped in (generation lineage 1)" in done.stdout
        assert "warmed" not in done.stdout
        note = done.stderr.splitlines()
        assert len(note) == 1 and "Traceback" not in done.stderr, done.stderr
        assert note[0].startswith("assetlog: replayed, but asset_edges_upstream, asset_edges_downstream not warmed")
        assert "CREATE EXTENSION pg_prewarm" in note[0] and "`assetlog db warm`" in note[0]

        summary = Replay(as_owner.settings, "properties", workers=1).run().as_dict()
        assert summary["generations"] == {"properties": 1}
        assert summary["warm"]["warmed"] is False and summary["warm"]["not_warmed"] == PROPERTIES_PATH
        assert "may not create it" in summary["warm"]["reason"]
        assert not has_prewarm(isolated.dsn)
    finally:
        drop_role(isolated.dsn, owner)


def test_a_warm_blocked_by_a_lock_stops_at_its_timeout_and_says_why(isolated: Isolated) -> None:
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn) as holder:  # e.g. a migration holding the table
        holder.execute("LOCK TABLE asset_edges IN ACCESS EXCLUSIVE MODE")
        report = warm_or_say_why(isolated.dsn, ["asset_edges"], timeout=0.5)
        holder.rollback()
    assert report == {"warmed": False, "not_warmed": EDGE_INDEXES, "reason": (
        "loading a relation took longer than 0.5s (a lock held on it, or a slow disk?)")}
    assert warm_or_say_why(isolated.dsn, ["asset_edges"], timeout=5)["warmed"] is True


def test_a_standby_that_cannot_be_warmed_is_said_and_the_primary_one_is_not(isolated: Isolated) -> None:
    """The read-only DSN on the primary: no standby to warm (None). On a server that does not answer:
    the reason, never an error (the replay has succeeded); and a primary never waits for a replay
    position (a standby's warm waits within its timeout)."""
    migrate(isolated.dsn)
    assert warm_standby_or_say_why(isolated.dsn, isolated.dsn, ["asset_edges"], timeout=5) is None
    nobody = conninfo.make_conninfo(isolated.dsn, port=str(free_port()))
    report = warm_standby_or_say_why(isolated.dsn, nobody, ["asset_edges"], timeout=2)
    assert report is not None and report["warmed"] is False and report["not_warmed"] == EDGE_INDEXES
    assert "connection" in report["reason"] and "\n" not in report["reason"]
    far = warm_or_say_why(isolated.dsn, ["asset_edges"], timeout=1, replayed_to="FFFFFFFF/0")
    assert far["warmed"] is False
    assert far["reason"].startswith("the standby had not replayed the primary's WAL up to FFFFFFFF/0 within 1s"), far


def test_a_warm_of_some_tables_leaves_the_budget_to_the_relations_before_them(isolated: Isolated) -> None:
    """`warm_read_path(tables=...)` loads only those tables' relations, but the others keep their place
    in the budget: with room for the edge indexes only, a warm of `assets` loads nothing."""
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO assets (key, first_seen, last_seen) SELECT 's3://w/' || i, now(), now() "
                     "FROM generate_series(1, 2000) i")
        conn.execute("INSERT INTO asset_edges (upstream_key, downstream_key, declared, first_seen, last_seen, "
                     "last_event_id) SELECT 's3://w/' || i, 's3://w/' || (i + 1), 'explicit', now(), now(), "
                     "gen_random_uuid() FROM generate_series(1, 2000) i")
        sizes = {name: blocks for name, (_, blocks) in in_shared_buffers(isolated.dsn).items()}
        buffers = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'").fetchone()[0]
        edges_only = (sizes["asset_edges_upstream"] + sizes["asset_edges_downstream"] + 0.5) / buffers

        warmed, _ = warm_read_path(conn, share=edges_only, tables=["assets"])
        assert [(w.relation, w.loaded) for w in warmed] == [("assets_key_hash", False), ("assets", False)]
        warmed, _ = warm_read_path(conn, share=edges_only, tables=["asset_edges"])
        assert [(w.relation, w.loaded) for w in warmed] == [(name, True) for name in EDGE_INDEXES]
        warmed, _ = warm_read_path(conn, tables=["assets", "lineage_history"])
        assert [(w.relation, w.loaded) for w in warmed] == [("assets_key_hash", True), ("assets", True)]


def _plan_nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", ()) for node in _plan_nodes(child))]


def test_a_replay_leaves_the_edges_all_visible_so_walks_read_no_heap(isolated: Isolated) -> None:
    """`asset_edges` goes live vacuumed (`shadow._STATISTICS`): its visibility map is set, so the walks'
    index-only scans read no heap page from the first query on. ANALYZE alone leaves the map empty
    (heap fetches for every edge until autovacuum comes); this test fails without the VACUUM."""
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE asset_edges SET (autovacuum_enabled = false)")  # only the replay may vacuum
    publish(isolated.settings, realistic_runs(1500, seed=62))
    Replay(isolated.settings, "lineage", warm=False, workers=1).run()
    with psycopg.connect(isolated.dsn, autocommit=True) as conn:
        pages, visible = conn.execute(
            "SELECT relpages, relallvisible FROM pg_class WHERE oid = 'asset_edges'::regclass").fetchone()
        assert pages > 0 and visible == pages, (pages, visible)
        frontier = "\n".join(row[0] for row in conn.execute(
            "SELECT DISTINCT downstream_key FROM asset_edges ORDER BY 1 LIMIT 50"))
        conn.execute("SET enable_seqscan = off")  # a small table: make the planner take the walk's index
        plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + graph._NEIGHBOURS[("all", "upstream", False)],
                            {"frontier": frontier, "cap": 10_000, "as_of": None}).fetchone()[0][0]["Plan"]
    scans = [node for node in _plan_nodes(plan) if node["Node Type"] == "Index Only Scan"]
    assert scans and all(node["Heap Fetches"] == 0 for node in scans), plan
    assert sum(node["Actual Rows"] for node in scans) > 0, plan
