"""The Python query API (`LineageStore`) on the real PostgreSQL, with data from the real projections."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from conftest import Isolated, StackEndpoints, create_isolated, drop_isolated
from events_factory import (
    BRONZE,
    CUSTOMERS,
    CUSTOMERS_PROPS,
    DASHBOARD,
    DASHBOARD_V2,
    FINAL,
    GOLD,
    LOOKUP,
    PROCESSED,
    PROCESSED_PROPS,
    SALES,
    SILVER,
    USERS,
    USERS_PROPS,
    at,
)
from query_world import (
    CHAIN,
    CYCLE,
    CYCLE_TAIL,
    DIAMOND_BOTTOM,
    DIAMOND_LEFT,
    DIAMOND_RIGHT,
    DIAMOND_TOP,
    HUB,
    HUB_DEPENDANTS,
    REPORT,
    REPORT_V1,
    REPORT_V2,
    SOURCE_A,
    SOURCE_A_PROPS,
    SOURCE_B,
    all_runs,
    project,
)

from assetlog.query.catalog import AssetNotFound
from assetlog.query.graph import QueryTimeout
from assetlog.query.store import LineageStore

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    """One database holding every scenario (distinct keys); the tests only read it."""
    isolated = create_isolated(stack, tmp_path_factory.mktemp("outbox"))
    try:
        project(isolated.dsn, all_runs())
        yield isolated
    finally:
        drop_isolated(stack, isolated)


@pytest.fixture(scope="module")
def store(world: Isolated) -> Iterator[LineageStore]:
    with LineageStore(world.dsn) as s:
        yield s


def props_of(details) -> dict:
    p = details.properties
    return {"name": p.name, "description": p.description, "owners": p.owners, "url": p.url}


def test_show_guide_assets_with_properties_metadata_and_neighbours(store: LineageStore) -> None:
    processed = store.asset(PROCESSED)
    assert props_of(processed) == PROCESSED_PROPS
    assert processed.last_materialization.status == "SUCCEEDED"
    assert processed.last_materialization.task_name == "transform"
    assert processed.last_materialization.flow_name == "analytics"
    assert processed.metadata.metadata == {"record_count": 1500}
    assert processed.metadata_is_from_last_materialization
    assert [(n.key, n.declared) for n in processed.upstream] == [(CUSTOMERS, "inferred")]
    assert processed.downstream_count == 0
    assert props_of(store.asset(CUSTOMERS)) == CUSTOMERS_PROPS

    sales = store.asset(SALES)
    assert sales.properties is None  # a string key never carries properties
    assert sales.last_materialization.by == "dbt"
    assert sales.metadata.metadata == {"rows": 10, "columns": 3, "quality": {"nulls": 0}}


def test_show_external_upstream_has_its_properties_but_no_run(store: LineageStore) -> None:
    users = store.asset(USERS)
    assert props_of(users) == USERS_PROPS
    assert users.last_materialization is None
    assert [(n.key, n.declared) for n in users.downstream] == [(FINAL, "explicit")]


def test_show_overwritten_properties_and_a_failed_run(store: LineageStore) -> None:
    dashboard = store.asset(DASHBOARD)
    assert props_of(dashboard) == DASHBOARD_V2 and dashboard.properties.url is None
    assert dashboard.properties.event_time == at(70)  # the string-key refresh at 80 left them alone
    assert dashboard.last_materialization.task_name == "dashboard_refresh"
    gold = store.asset(GOLD)
    run = gold.last_materialization
    assert (run.status, run.error_type, run.error_message) == ("FAILED", "ValueError", "negative revenue")
    assert gold.metadata.metadata == {"partial": True} and gold.metadata_is_from_last_materialization


def test_lineage_upstream_and_downstream_with_depths_and_declarations(store: LineageStore) -> None:
    up = store.upstream(DASHBOARD)
    assert {n.key: n.upstream_depth for n in up.nodes} == {DASHBOARD: 0, GOLD: 1, SILVER: 2, BRONZE: 3, LOOKUP: 3}
    assert [n.key for n in up.nodes] == [DASHBOARD, GOLD, SILVER, BRONZE, LOOKUP]  # breadth first, then key
    assert {(e.upstream, e.downstream, e.declared) for e in up.edges} == {
        (GOLD, DASHBOARD, "inferred"), (SILVER, GOLD, "inferred"), (BRONZE, SILVER, "inferred"),
        (LOOKUP, SILVER, "explicit")}
    assert not up.truncated
    assert up.nodes[1].last_status == "FAILED" and up.nodes[0].name == DASHBOARD_V2["name"]

    assert [n.key for n in store.upstream(DASHBOARD, depth=1).nodes] == [DASHBOARD, GOLD]
    down = store.downstream(BRONZE)
    assert {n.key: n.downstream_depth for n in down.nodes} == {BRONZE: 0, SILVER: 1, GOLD: 2, DASHBOARD: 3}


def test_subgraph_goes_both_ways(store: LineageStore) -> None:
    graph = store.subgraph(SILVER, depth=1)
    assert {n.key: (n.upstream_depth, n.downstream_depth) for n in graph.nodes} == {
        SILVER: (0, 0), BRONZE: (1, None), LOOKUP: (1, None), GOLD: (None, 1)}
    assert len(graph.edges) == 3


def test_cycles_end_and_each_asset_appears_once(store: LineageStore) -> None:
    graph = store.downstream(CYCLE[0])  # unlimited depth around a -> b -> c -> a, c -> d
    assert {n.key: n.downstream_depth for n in graph.nodes} == {
        CYCLE[0]: 0, CYCLE[1]: 1, CYCLE[2]: 2, CYCLE_TAIL: 3}
    assert {(e.upstream, e.downstream) for e in graph.edges} == {
        (CYCLE[0], CYCLE[1]), (CYCLE[1], CYCLE[2]), (CYCLE[2], CYCLE[0]), (CYCLE[2], CYCLE_TAIL)}
    both = store.lineage(CYCLE[1])
    assert len(both.nodes) == 4
    assert {n.key: (n.upstream_depth, n.downstream_depth) for n in both.nodes}[CYCLE[0]] == (1, 2)


def test_diamond_and_long_chain(store: LineageStore) -> None:
    diamond = store.upstream(DIAMOND_BOTTOM)
    assert {n.key: n.upstream_depth for n in diamond.nodes} == {
        DIAMOND_BOTTOM: 0, DIAMOND_LEFT: 1, DIAMOND_RIGHT: 1, DIAMOND_TOP: 2}
    assert len(diamond.edges) == 4
    chain = store.upstream(CHAIN[-1])
    assert [n.key for n in chain.nodes] == CHAIN[::-1] and chain.nodes[-1].upstream_depth == 29
    assert [n.key for n in store.upstream(CHAIN[-1], depth=5).nodes] == CHAIN[::-1][:6]


def test_big_answers_are_cut_off_at_the_limit_and_say_so(store: LineageStore) -> None:
    graph = store.downstream(HUB, limit=10)
    assert graph.truncated and graph.limit == 10
    assert [n.key for n in graph.nodes] == [HUB] + HUB_DEPENDANTS[:9]  # the first by key
    assert {e.downstream for e in graph.edges} == set(HUB_DEPENDANTS[:9])  # no edge to a dropped asset
    whole = store.downstream(HUB, limit=31)
    assert not whole.truncated and len(whole.nodes) == 31
    assert store.downstream(HUB, limit=30).truncated


def test_as_of_shows_old_properties_and_graph_before_an_overwrite_and_new_after(store: LineageStore) -> None:
    before = store.asset(REPORT, as_of=at(120))
    assert props_of(before) == REPORT_V1 and before.properties.url == REPORT_V1["url"]
    assert before.metadata.metadata == {"rows": 10}
    assert [(n.key, n.declared) for n in before.upstream] == [(SOURCE_A, "explicit")]
    assert [n.key for n in store.upstream(REPORT, as_of=at(120)).nodes] == [REPORT, SOURCE_A]
    assert props_of(store.asset(SOURCE_A, as_of=at(120))) == SOURCE_A_PROPS  # given in asset_deps

    between = store.asset(REPORT, as_of=at(170))  # a string-key run at 150: new run, same properties
    assert props_of(between) == REPORT_V1
    assert between.last_materialization.task_name == "weekly_refresh"
    assert between.metadata.metadata == {"rows": 15}
    assert between.upstream[0].last_seen == at(150)

    after = store.asset(REPORT, as_of=at(250))
    assert props_of(after) == REPORT_V2 and after.properties.url is None
    assert [n.key for n in after.upstream] == [SOURCE_A, SOURCE_B]
    assert [n.key for n in store.upstream(REPORT, as_of=at(250)).nodes] == [REPORT, SOURCE_A, SOURCE_B]
    assert store.asset(REPORT, as_of=at(200)).properties.name == REPORT_V2["name"]  # at the very event time

    with pytest.raises(AssetNotFound, match="had not been seen yet"):
        store.asset(SOURCE_B, as_of=at(120))
    with pytest.raises(AssetNotFound):
        store.downstream(SOURCE_B, as_of=at(120))


@pytest.mark.parametrize("key", sorted({a.key if hasattr(a, "key") else a for r in all_runs() for a in r.assets}
                                       | {USERS, LOOKUP, SOURCE_A, SOURCE_B, HUB, CYCLE[0], DIAMOND_TOP, CHAIN[0]}))
def test_as_of_after_the_last_event_equals_the_current_answer(store: LineageStore, key: str) -> None:
    """The history-only answer applies the projections' rules: at a time after every event it must
    agree with the current tables field for field."""
    now = store.asset(key).to_json()
    then = store.asset(key, as_of=FAR_FUTURE).to_json()
    assert then.pop("as_of") is not None and now.pop("as_of") is None
    assert then == now
    graph_now = store.lineage(key).to_json()
    graph_then = store.lineage(key, as_of=FAR_FUTURE).to_json()
    graph_now.pop("as_of"), graph_then.pop("as_of")
    assert graph_then == graph_now


def test_history_is_newest_first_and_pages_without_gaps(store: LineageStore) -> None:
    first = store.history(REPORT, limit=2)
    assert [e.run.event_time for e in first.entries] == [at(200), at(150)]
    assert first.entries[0].metadata == {"rows": 20} and first.entries[0].upstream_keys == [SOURCE_A, SOURCE_B]
    assert first.entries[0].properties["name"] == REPORT_V2["name"] and first.entries[1].properties is None
    second = store.history(REPORT, limit=2, before=first.next_cursor)
    assert [e.run.event_time for e in second.entries] == [at(100)] and second.next_cursor is None
    assert [e.run.event_time for e in store.history(REPORT, limit=2, offset=2).entries] == [at(100)]
    assert [e.run.event_time for e in store.history(REPORT, before=at(150).isoformat()).entries] == [at(100)]
    assert store.history(USERS).entries == []  # referenced, never materialized
    with pytest.raises(AssetNotFound):
        store.history("s3://nowhere/missing.csv")


def test_search_matches_keys_names_descriptions_and_owners(store: LineageStore) -> None:
    def keys(**kwargs) -> list[str]:
        return [a.key for a in store.search(**kwargs).assets]

    assert keys(text="CUSTOMER") == [PROCESSED, CUSTOMERS]  # name, any case; key order
    assert keys(text="pii removed") == [PROCESSED]  # description
    assert keys(text="crm-team") == [SOURCE_A]  # an owner
    assert keys(text="customer_db") == [CUSTOMERS]  # key; _ is literal
    assert keys(text="customer%db") == []  # % is literal too
    assert keys(owner="alice@company.com") == [PROCESSED]
    assert keys(owner="analytics") == [REPORT]
    assert keys(text="report", owner="finance") == [REPORT]
    page = store.search(text="test/hub/", limit=20)
    assert len(page.assets) == 20 and page.next_after == page.assets[-1].key
    rest = store.search(text="test/hub/", limit=20, after=page.next_after)
    assert len(rest.assets) == 11 and rest.next_after is None
    assert store.search(text="analytics").assets[0].name == REPORT_V2["name"]


def test_unknown_keys_raise_asset_not_found(store: LineageStore) -> None:
    for call in (store.asset, store.lineage, store.upstream, store.history):
        with pytest.raises(AssetNotFound, match="no asset 's3://nowhere/x.csv'"):
            call("s3://nowhere/x.csv")


def test_bad_arguments_are_refused_before_querying(store: LineageStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.asset(REPORT, as_of=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="depth"):
        store.lineage(REPORT, depth=0)
    with pytest.raises(ValueError, match="direction"):
        store.lineage(REPORT, direction="sideways")  # type: ignore[arg-type]


def test_slow_statements_are_cancelled_by_the_statement_timeout(world: Isolated) -> None:
    with LineageStore(world.dsn, statement_timeout=0.2) as short:
        with pytest.raises(QueryTimeout, match="statement timeout"), short._reading() as conn:
            conn.execute("SELECT pg_sleep(2)")
        assert short.asset(REPORT).key == REPORT  # the connection is usable afterwards


def test_reads_run_without_jit_whatever_the_server_says(store: LineageStore) -> None:
    """The server's default (jit on) compiled a walk's as-of hop for 85-140 ms that ran in 1 ms."""
    with store._reading() as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        assert conn.execute("SELECT reset_val FROM pg_settings WHERE name = 'jit'").fetchone() == ("on",)


def test_a_walk_past_its_time_budget_stops_with_query_timeout(store: LineageStore) -> None:
    from assetlog.query import graph

    with store._reading() as conn, pytest.raises(QueryTimeout, match="longer than -1s"):
        graph.walk(conn, CHAIN[-1], "upstream", None, 1000, None, budget_seconds=-1)


def test_a_pool_serves_threads(world: Isolated) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with LineageStore(world.dsn, pool_size=3) as pooled, ThreadPoolExecutor(6) as threads:
        results = list(threads.map(lambda key: pooled.upstream(key).nodes[-1].key, [DASHBOARD] * 12))
    assert results == [LOOKUP] * 12
