"""Lineage inference on the real broker: what the published dependency events say.

Every test runs a flow with a publisher on its own topics and decodes what Kafka holds.
"""

from __future__ import annotations

from producer_support import run_and_read

from assetlog.producer import Asset, AssetProperties, flow, materialize, task, unmapped

INFERRED, EXPLICIT = "INFERRED", "EXPLICIT"


def test_several_assets_per_task_each_get_a_materialization_and_the_same_upstream(isolated):
    @materialize("s3://lake/raw.csv")
    def raw() -> list[int]:
        return [1, 2]

    @materialize("s3://lake/a.csv", "s3://lake/b.csv", "snowflake://wh/db/c")
    def split(rows: list[int]) -> None: ...

    @flow
    def pipeline() -> None:
        split(raw())

    out = run_and_read(isolated.settings, pipeline)
    assert sorted(m["asset_key"] for m in out.materializations) == [
        "s3://lake/a.csv", "s3://lake/b.csv", "s3://lake/raw.csv", "snowflake://wh/db/c"]
    assert out.edges() == {("s3://lake/raw.csv", k, INFERRED)
                           for k in ("s3://lake/a.csv", "s3://lake/b.csv", "snowflake://wh/db/c")}
    run_ids = {m["run"]["task_run_id"] for m in out.materializations if m["asset_key"] != "s3://lake/raw.csv"}
    assert len(run_ids) == 1


def test_materializing_tasks_pass_on_only_their_own_assets(isolated):
    @materialize("s3://lake/bronze")
    def bronze() -> dict[str, int]:
        return {"rows": 3}

    @materialize("s3://lake/silver")
    def silver(data: dict[str, int]) -> dict[str, int]:
        return {"rows": data["rows"] - 1}

    @materialize("s3://lake/gold")
    def gold(data: dict[str, int]) -> int:
        return data["rows"]

    @flow
    def medallion() -> int:
        return gold(silver(bronze()))

    out = run_and_read(isolated.settings, medallion)
    assert out.result == 2
    assert out.edges() == {("s3://lake/bronze", "s3://lake/silver", INFERRED),
                           ("s3://lake/silver", "s3://lake/gold", INFERRED)}
    assert out.upstream_of("s3://lake/gold") == ["s3://lake/silver"]
    assert out.upstream_of("s3://lake/bronze") == []


def test_plain_tasks_pass_on_everything_they_received_plus_their_asset_deps(isolated):
    @materialize("s3://lake/orders")
    def orders() -> list[int]:
        return [1, 2, 3]

    @materialize("s3://lake/customers")
    def customers() -> list[str]:
        return ["a", "b"]

    @task
    def join(o: list[int], c: list[str]) -> list[tuple[int, str]]:
        return list(zip(o, c, strict=False))

    @task(asset_deps=["s3://lake/fx-rates"])
    def convert(rows: list[tuple[int, str]]) -> list[tuple[int, str]]:
        return rows

    @task
    def untouched(rows: list[tuple[int, str]]) -> list[tuple[int, str]]:
        return rows

    @materialize("s3://lake/report")
    def report(rows: list[tuple[int, str]]) -> None: ...

    @flow
    def pipeline() -> None:
        report(untouched(convert(join(orders(), customers()))))

    out = run_and_read(isolated.settings, pipeline)
    assert out.edges() == {(up, "s3://lake/report", INFERRED)
                           for up in ("s3://lake/orders", "s3://lake/customers", "s3://lake/fx-rates")}
    assert out.upstream_of("s3://lake/report") == ["s3://lake/orders", "s3://lake/customers", "s3://lake/fx-rates"]
    assert {m["asset_key"] for m in out.materializations} == {"s3://lake/orders", "s3://lake/customers",
                                                               "s3://lake/report"}


def test_explicit_asset_deps_are_explicit_and_win_over_inferred(isolated):
    @materialize("s3://lake/a")
    def a() -> str:
        return "a-data"

    @materialize("s3://lake/b", asset_deps=["s3://lake/a", Asset(key="s3://lake/config.json")])
    def b(data: str) -> None: ...

    @flow
    def pipeline() -> None:
        b(a())

    out = run_and_read(isolated.settings, pipeline)
    assert out.edges() == {("s3://lake/a", "s3://lake/b", EXPLICIT), ("s3://lake/config.json", "s3://lake/b", EXPLICIT)}
    assert len(out.dependencies) == 2


def test_mixed_inferred_and_explicit_dependencies(isolated):
    @materialize("s3://lake/upstream.csv")
    def create_upstream() -> str:
        return "upstream_data"

    @materialize("s3://lake/downstream.csv", asset_deps=["s3://lake/config.json"])
    def create_downstream(upstream_data: str) -> None: ...

    @flow
    def mixed() -> None:
        create_downstream(create_upstream())

    out = run_and_read(isolated.settings, mixed)
    assert out.edges() == {("s3://lake/upstream.csv", "s3://lake/downstream.csv", INFERRED),
                           ("s3://lake/config.json", "s3://lake/downstream.csv", EXPLICIT)}
    assert out.upstream_of("s3://lake/downstream.csv") == ["s3://lake/upstream.csv", "s3://lake/config.json"]


def test_external_asset_properties_travel_only_with_explicit_full_assets(isolated):
    external = Asset(key="postgres://prod/public/users",
                     properties=AssetProperties(name="Users", description="Prod users", owners=["platform"],
                                                url="https://db/users"))
    described = Asset(key="s3://lake/described", properties=AssetProperties(name="Described"))

    @materialize(described)
    def make_described() -> int:
        return 1000

    @materialize("s3://lake/analytics", asset_deps=[external])
    def analytics(x: int) -> None: ...

    @flow
    def pipeline() -> None:
        analytics(make_described())

    out = run_and_read(isolated.settings, pipeline)
    deps = {d["upstream_key"]: d for d in out.dependencies}
    assert deps["postgres://prod/public/users"]["upstream_properties"] == {
        "name": "Users", "description": "Prod users", "owners": ["platform"], "url": "https://db/users"}
    assert deps["s3://lake/described"]["declared"] == INFERRED
    assert deps["s3://lake/described"]["upstream_properties"] is None
    assert out.materialization("s3://lake/described")["properties"]["name"] == "Described"
    assert out.materialization("s3://lake/analytics")["properties"] is None


def test_inference_through_nested_lists_dicts_tuples_and_sets(isolated):
    @materialize("s3://n/one")
    def one() -> str:
        return "one-result"

    @materialize("s3://n/two")
    def two() -> tuple[int, int]:
        return (7, 8)

    @materialize("s3://n/three")
    def three() -> frozenset[str]:
        return frozenset({"x"})

    @materialize("s3://n/four")
    def four() -> list[int]:
        return [4000, 4001]

    @materialize("s3://n/sink")
    def sink(payload: dict[str, object]) -> None: ...

    @flow
    def pipeline() -> None:
        r1, r2, r3, r4 = one(), two(), three(), four()
        sink({"deep": [("x", {"k": r1})], "t": (1, r2), "s": {r3}, "item": r4[0]})

    out = run_and_read(isolated.settings, pipeline)
    assert {d["upstream_key"] for d in out.dependencies} == {"s3://n/one", "s3://n/two", "s3://n/three", "s3://n/four"}


def test_futures_submit_and_wait_for_carry_lineage(isolated):
    @materialize("s3://f/a")
    def a() -> list[int]:
        return [1]

    @materialize("s3://f/b")
    def b() -> None: ...

    @materialize("s3://f/c")
    def c(x: list[int]) -> list[int]:
        return x

    @flow
    def pipeline() -> list[int]:
        fa = a.submit()
        fb = b.submit()
        fc = c.submit(fa, wait_for=[fb])
        return fc.result()

    out = run_and_read(isolated.settings, pipeline)
    assert out.result == [1]
    assert out.edges() == {("s3://f/a", "s3://f/c", INFERRED), ("s3://f/b", "s3://f/c", INFERRED)}


def test_wait_for_a_plain_task_passes_its_received_assets(isolated):
    @materialize("s3://w/a")
    def a() -> int:
        return 1000

    @task
    def check(x: int) -> None: ...

    @materialize("s3://w/b")
    def b() -> None: ...

    @flow
    def pipeline() -> None:
        checked = check.submit(a())
        b(wait_for=[checked])

    out = run_and_read(isolated.settings, pipeline)
    assert out.edges() == {("s3://w/a", "s3://w/b", INFERRED)}


def test_map_creates_one_run_per_element_with_the_lineage_of_each(isolated):
    @materialize("s3://m/source")
    def source() -> list[int]:
        return [10, 20, 30]

    @materialize("s3://m/partition")
    def part(value: int, factor: int, extra: list[int]) -> int:
        return value * factor

    @materialize("s3://m/total")
    def total(values: list[int]) -> int:
        return sum(values)

    @flow
    def pipeline() -> int:
        futures = part.map(source.submit(), 2, unmapped([1, 2]))
        return total(futures)

    out = run_and_read(isolated.settings, pipeline)
    assert out.result == 120
    parts = [m for m in out.materializations if m["asset_key"] == "s3://m/partition"]
    assert len(parts) == 3 and len({m["run"]["task_run_id"] for m in parts}) == 3
    assert all(m["upstream_keys"] == ["s3://m/source"] for m in parts)
    assert out.upstream_of("s3://m/total") == ["s3://m/partition"]


def test_map_over_a_mapped_list_of_futures(isolated):
    @materialize("s3://mm/first")
    def first(x: int) -> int:
        return x + 1000

    @materialize("s3://mm/second")
    def second(x: int) -> int:
        return x

    @flow
    def pipeline() -> list[int]:
        return second.map(first.map([1, 2])).result()

    out = run_and_read(isolated.settings, pipeline)
    assert out.result == [1001, 1002]
    assert [m["upstream_keys"] for m in out.materializations if m["asset_key"] == "s3://mm/second"] == [
        ["s3://mm/first"], ["s3://mm/first"]]


def test_a_task_called_inside_another_task_inherits_nothing_from_it(isolated):
    @materialize("s3://i/outer-input")
    def outer_input() -> str:
        return "input-value"

    @materialize("s3://i/inner")
    def inner() -> str:
        return "inner-value"

    @materialize("s3://i/outer")
    def outer(value: str) -> str:
        return inner()

    @flow
    def pipeline() -> None:
        outer(outer_input())

    out = run_and_read(isolated.settings, pipeline)
    assert out.upstream_of("s3://i/inner") == []
    assert out.upstream_of("s3://i/outer") == ["s3://i/outer-input"]


def test_small_ints_none_and_booleans_are_not_traced(isolated):
    @materialize("s3://s/flag")
    def flag() -> bool:
        return True

    @materialize("s3://s/count")
    def count() -> int:
        return 3

    @materialize("s3://s/consumer")
    def consumer(a: bool, b: int) -> None: ...

    @flow
    def pipeline() -> None:
        flag()
        count()
        consumer(True, 3)

    out = run_and_read(isolated.settings, pipeline)
    assert out.dependencies == []


def test_lineage_does_not_cross_flow_runs(isolated):
    @materialize("s3://x/a")
    def a() -> str:
        return "shared-value"

    @materialize("s3://x/b")
    def b(value: str) -> None: ...

    value_holder: list[str] = []

    @flow
    def first() -> None:
        value_holder.append(a())

    @flow
    def second() -> None:
        b(value_holder[0])

    def both() -> None:
        first()
        second()

    out = run_and_read(isolated.settings, both)
    assert out.dependencies == []
    flow_ids = {m["run"]["flow_run_id"] for m in out.materializations}
    assert len(flow_ids) == 2 and {m["run"]["flow_name"] for m in out.materializations} == {"first", "second"}


def test_with_options_assets_replace_the_list_and_by_names_the_tool(isolated):
    @materialize("s3://o/original", by="dbt")
    def build() -> None: ...

    @flow
    def pipeline() -> None:
        build()
        build.with_options(assets=["s3://o/replacement-1", "s3://o/replacement-2"])()
        build.with_options(by="spark")()

    out = run_and_read(isolated.settings, pipeline)
    by_key: dict[str, list[str | None]] = {}
    for m in out.materializations:
        by_key.setdefault(m["asset_key"], []).append(m["by"])
    assert by_key == {"s3://o/original": ["dbt", "spark"], "s3://o/replacement-1": ["dbt"],
                      "s3://o/replacement-2": ["dbt"]}
