"""Prefect's run options where `test_prefect_parity.py` does not reach: timeouts in worker
threads and event loops, async states, generators stopped early, flow timeouts."""

from __future__ import annotations

import asyncio
import time

from producer_support import run_and_read

from assetlog.producer import (
    FlowRunTimeoutError,
    TaskRunTimeoutError,
    add_asset_metadata,
    flow,
    materialize,
)


def test_a_submitted_task_times_out_in_its_worker_thread(isolated):
    @materialize("s3://timeout/threaded", timeout_seconds=0.3)
    def slow() -> None:
        for _ in range(100):
            time.sleep(0.02)

    @flow
    def pipeline() -> str:
        future = slow.submit()
        future.wait()
        return type(future.exception()).__name__

    out = run_and_read(isolated.settings, pipeline)
    assert out.result == "TaskRunTimeoutError"
    assert out.materialization("s3://timeout/threaded")["status"] == "FAILED"
    assert out.materialization("s3://timeout/threaded")["error"]["type"] == "TaskRunTimeoutError"


def test_an_async_task_times_out_and_retries_count_it_as_a_failure(isolated):
    attempts: list[int] = []

    @materialize("s3://timeout/async", timeout_seconds=0.2, retries=1)
    async def slow() -> None:
        attempts.append(1)
        await asyncio.sleep(5)

    @flow
    async def pipeline() -> None:
        await slow()

    out = run_and_read(isolated.settings, pipeline)
    assert isinstance(out.error, TaskRunTimeoutError) and len(attempts) == 2
    assert out.materialization("s3://timeout/async")["status"] == "FAILED"


def test_a_flow_times_out(isolated):
    @materialize("s3://timeout/in-flow")
    def quick() -> None: ...

    @flow(timeout_seconds=0.3)
    def pipeline() -> None:
        quick()
        time.sleep(3)

    out = run_and_read(isolated.settings, pipeline)
    assert isinstance(out.error, FlowRunTimeoutError)
    assert out.materialization("s3://timeout/in-flow")["status"] == "SUCCEEDED"


def test_async_calls_return_states(isolated):
    @materialize("s3://state/async")
    async def broken() -> None:
        raise ValueError("bad")

    @flow
    async def pipeline() -> tuple[bool, str]:
        state = await broken(return_state=True)
        return state.is_failed(), type(state.result(raise_on_failure=False)).__name__

    out = run_and_read(isolated.settings, lambda: asyncio.run(pipeline(return_state=True)).result())
    assert out.result == (True, "ValueError")
    assert out.materialization("s3://state/async")["status"] == "FAILED"


def test_a_generator_stopped_early_completes_with_its_metadata(isolated):
    @materialize("s3://generated/early")
    def rows():
        add_asset_metadata("s3://generated/early", {"started": True})
        yield from range(1000, 2000)

    @flow
    def pipeline() -> list[int]:
        taken = []
        for row in rows():
            taken.append(row)
            if len(taken) == 2:
                break
        return taken

    out = run_and_read(isolated.settings, pipeline)
    assert out.result == [1000, 1001]
    assert out.materialization("s3://generated/early")["status"] == "SUCCEEDED"
    assert [m["metadata_json"] for m in out.metadata] == ['{"started":true}']


def test_a_task_timeout_inside_a_flow_timeout_keeps_the_flows_deadline(isolated):
    @materialize("s3://timeout/inner", timeout_seconds=5)
    def inner() -> None: ...

    @flow(timeout_seconds=0.5)
    def pipeline() -> None:
        inner()
        time.sleep(3)

    started = time.monotonic()
    out = run_and_read(isolated.settings, pipeline)
    assert isinstance(out.error, FlowRunTimeoutError) and time.monotonic() - started < 2.5
    assert out.materialization("s3://timeout/inner")["status"] == "SUCCEEDED"
