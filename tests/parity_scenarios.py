"""Pipelines a Prefect user could write, each run once under real Prefect and once under
`assetlog.producer` by `test_prefect_parity.py` (Prefect's side in a subprocess, see
`prefect_parity_runner.py`).

Every scenario gets `api`, a namespace with the names a user imports (`flow`, `task`,
`materialize`, `Asset`, `AssetProperties`, `add_asset_metadata`) and `notes`, a list
where it records what a user would see besides the asset events (return values,
states, error types, hook calls). Scenarios catch what they expect to raise, so a
run always ends with its events and notes to compare.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pydantic

Scenario = Callable[[SimpleNamespace], None]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


class Reading(pydantic.BaseModel):
    rows: int
    taken: datetime.datetime


@scenario
def metadata_that_is_not_plain_json(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/metadata.parquet")
    def build() -> None:
        api.add_asset_metadata("s3://parity/metadata.parquet", {
            "taken": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
            "day": datetime.date(2024, 5, 6),
            "cost": decimal.Decimal("12.50"),
            "tags": {"daily"},
            "pair": (1, "a"),
            "reading": Reading(rows=3, taken=datetime.datetime(2024, 1, 1)),
            "nested": {1: {2: "x"}, "k": [1.5, None]},
        })

    @api.flow
    def pipeline() -> None:
        build()

    pipeline()


@scenario
def empty_properties_mean_no_properties(api: SimpleNamespace) -> None:
    @api.materialize(api.Asset(key="s3://parity/empty-props", properties=api.AssetProperties()))
    def build() -> None: ...

    @api.flow
    def pipeline() -> None:
        build()

    pipeline()


@scenario
def same_key_twice_keeps_the_properties(api: SimpleNamespace) -> None:
    named = api.Asset(key="s3://parity/twice", properties=api.AssetProperties(name="Twice", owners=["ops"]))

    @api.materialize("s3://parity/twice", named)
    def build() -> dict[str, int]:
        return {"rows": 1000}

    @api.materialize("s3://parity/after-twice")
    def after(data: dict[str, int]) -> None: ...

    @api.flow
    def pipeline() -> None:
        after(build())

    pipeline()


@scenario
def return_state(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/state-ok")
    def ok() -> int:
        return 1000

    @api.materialize("s3://parity/state-broken")
    def broken() -> int:
        raise ValueError("bad input")

    @api.flow
    def pipeline() -> int:
        good = ok(return_state=True)
        bad = broken(return_state=True)
        api.notes.append(("task", good.is_completed(), good.is_failed(), good.result()))
        api.notes.append(("failed task", bad.is_completed(), bad.is_failed(),
                          type(bad.result(raise_on_failure=False)).__name__))
        return good.result() + 1

    state = pipeline(return_state=True)
    api.notes.append(("flow", state.is_completed(), state.result()))


@scenario
def generator_task(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/generated")
    def produce():
        for part in ("a", "b", "c"):
            yield {"part": part}
        api.add_asset_metadata("s3://parity/generated", {"parts": 3})

    @api.materialize("s3://parity/from-generator")
    def consume(item: dict[str, str]) -> None: ...

    @api.flow
    def pipeline() -> None:
        items = list(produce())
        consume(items[1])
        api.notes.append([item["part"] for item in items])

    pipeline()


@scenario
def cache_hit_emits_nothing(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/cached", persist_result=True)
    def build(day: str) -> dict[str, str]:
        api.notes.append(("ran", day))
        return {"day": day}

    @api.flow
    def pipeline() -> None:
        build("2024-01-01")
        build("2024-01-01")
        build("2024-01-02")

    pipeline()


@scenario
def timeout_fails_the_materialization(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/slow", timeout_seconds=0.5)
    def slow() -> None:
        for _ in range(60):
            time.sleep(0.05)

    @api.flow
    def pipeline() -> None:
        try:
            slow()
        except TimeoutError as exc:
            api.notes.append(("timed out", isinstance(exc, TimeoutError)))

    pipeline()


@scenario
def retry_condition_stops_retries(api: SimpleNamespace) -> None:
    attempts: list[int] = []

    def only_on_oserror(task: Any, task_run: Any, state: Any) -> bool:
        return isinstance(state.result(raise_on_failure=False), OSError)

    @api.materialize("s3://parity/no-retry", retries=3, retry_condition_fn=only_on_oserror)
    def build() -> None:
        attempts.append(1)
        raise ValueError("not worth retrying")

    @api.materialize("s3://parity/retried", retries=2, retry_condition_fn=only_on_oserror)
    def flaky() -> None:
        attempts.append(2)
        if attempts.count(2) < 2:
            raise OSError("try again")

    @api.flow
    def pipeline() -> None:
        try:
            build()
        except ValueError:
            pass
        flaky()
        api.notes.append(sorted(attempts))

    pipeline()


@scenario
def hooks_are_called(api: SimpleNamespace) -> None:
    def on_completion(owner: Any, run: Any, state: Any) -> None:
        api.notes.append(("completed", owner.name, state.is_completed(), isinstance(run.name, str)))

    def on_failure(owner: Any, run: Any, state: Any) -> None:
        api.notes.append(("failed", owner.name, state.is_failed()))

    @api.materialize("s3://parity/hooked", on_completion=[on_completion])
    def good() -> None: ...

    @api.materialize("s3://parity/hooked-broken", on_failure=[on_failure])
    def bad() -> None:
        raise RuntimeError("boom")

    @api.flow(name="hooked-flow", on_failure=[on_failure])
    def pipeline() -> None:
        good()
        bad()

    try:
        pipeline()
    except RuntimeError:
        api.notes.append("flow raised")


@scenario
def flow_retries(api: SimpleNamespace) -> None:
    tries: list[int] = []

    @api.materialize("s3://parity/in-retried-flow")
    def build() -> None: ...

    @api.flow(retries=1)
    def pipeline() -> str:
        build()
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("first attempt fails")
        return "second attempt"

    api.notes.append(pipeline())


@dataclasses.dataclass
class Bundle:
    data: dict[str, int]
    label: str


class Wrapped(pydantic.BaseModel):
    payload: Any


@scenario
def results_inside_dataclasses_and_models(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/raw-a")
    def raw_a() -> dict[str, int]:
        return {"a": 1000}

    @api.materialize("s3://parity/raw-b")
    def raw_b() -> dict[str, int]:
        return {"b": 1000}

    @api.task
    def bundle() -> Bundle:
        return Bundle(data={"rows": 1000}, label="daily")

    @api.materialize("s3://parity/from-bundle-field")
    def from_field(data: dict[str, int]) -> None: ...

    @api.materialize("s3://parity/from-wrapped")
    def from_wrapped(wrapped: Wrapped, bundled: Bundle) -> None: ...

    @api.materialize("s3://parity/bundle-source")
    def source() -> Bundle:
        return Bundle(data={"rows": 2000}, label="source")

    @api.flow
    def pipeline() -> None:
        a, b = raw_a(), raw_b()
        made = source()
        from_field(made.data)
        from_wrapped(Wrapped(payload=a), Bundle(data=b, label="x"))
        bundle()

    pipeline()


@scenario
def subflow_return_hides_the_producer(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/before-subflow")
    def build() -> dict[str, int]:
        return {"rows": 1000}

    @api.flow
    def passthrough(data: dict[str, int]) -> dict[str, int]:
        return data

    @api.materialize("s3://parity/after-subflow")
    def after(data: dict[str, int]) -> None: ...

    @api.materialize("s3://parity/direct")
    def direct(data: dict[str, int]) -> None: ...

    @api.flow
    def pipeline() -> None:
        data = build()
        direct(data)
        after(passthrough(data))

    pipeline()


@scenario
def submit_outside_a_flow_is_refused(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/outside")
    def build(x: int) -> int:
        return x

    for how in ("submit", "map"):
        try:
            future = build.submit(1) if how == "submit" else build.map([1, 2])
            api.notes.append((how, "accepted", future is not None))
        except Exception as exc:
            api.notes.append((how, type(exc).__name__))


@scenario
def metadata_outside_a_task_errors(api: SimpleNamespace) -> None:
    asset = api.Asset(key="s3://parity/outside-task")
    for call in (lambda: api.add_asset_metadata(asset, {"a": 1}), lambda: asset.add_metadata({"a": 1})):
        try:
            call()
        except Exception as exc:
            api.notes.append((type(exc).__name__, str(exc)))


@scenario
def wait_for_a_single_future(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/waited-on")
    def first() -> None: ...

    @api.materialize("s3://parity/waiting")
    def second() -> str:
        return "ran"

    @api.flow
    def pipeline() -> None:
        f = first.submit()
        s = second.submit(wait_for=f)
        s.wait()
        api.notes.append(s.result())

    pipeline()


@scenario
def with_options_and_task_attributes(api: SimpleNamespace) -> None:
    @api.materialize("s3://parity/options")
    def build() -> None: ...

    other = build.with_options(assets=["s3://parity/options-b"])
    api.notes.append((type(other.assets).__name__, [a.key for a in other.assets]))
    api.notes.append(("persist_result", build.persist_result, other.persist_result))
