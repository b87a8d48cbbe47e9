"""Every option of Prefect's `@task` and `@flow` is implemented by Assetlog's built-in runtime,
or refused at decoration with one line naming the Prefect bridge: none is accepted and
ignored. The option lists are read from the installed Prefect, so a new Prefect option
fails `test_every_prefect_option_is_known` until it is sorted into one of the sets here."""

from __future__ import annotations

import inspect
from typing import Any

import prefect
import pytest

from assetlog.producer import flow, materialize, task
from assetlog.producer.cache_policies import DEFAULT, NO_CACHE

# Options whose Prefect semantics Assetlog's runtime implements (test_prefect_parity.py and
# tests/prefect_ported compare them with real Prefect).
TASK_IMPLEMENTED = {"name", "description", "tags", "version", "retries", "retry_delay_seconds",
                    "retry_jitter_factor", "retry_condition_fn", "timeout_seconds", "on_completion",
                    "on_failure", "on_running", "persist_result", "cache_policy", "asset_deps"}
FLOW_IMPLEMENTED = {"name", "description", "version", "retries", "retry_delay_seconds", "timeout_seconds",
                    "on_completion", "on_failure", "on_crashed", "on_running"}
# Options that only name or display a run in Prefect's UI: nothing a run does or emits depends on them.
TASK_DISPLAY = {"task_run_name", "log_prints", "viz_return_value"}
FLOW_DISPLAY = {"flow_run_name", "log_prints"}
# Refused, with a value that asks for what only Prefect has.
TASK_REFUSED: dict[str, Any] = {
    "cache_key_fn": lambda context, parameters: "k", "cache_expiration": 60, "refresh_cache": True,
    "result_storage": "local-file-system/x", "result_storage_key": "k", "result_serializer": "json",
    "cache_result_in_memory": False, "on_rollback": [print], "on_commit": [print],
}
FLOW_REFUSED: dict[str, Any] = {
    "task_runner": object(), "validate_parameters": True, "persist_result": True,
    "result_storage": "local-file-system/x", "result_serializer": "json", "cache_result_in_memory": False,
    "on_cancellation": [print],
}


def prefect_options(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "fn"}


def test_every_prefect_option_is_known():
    assert prefect_options(prefect.Task) == TASK_IMPLEMENTED | TASK_DISPLAY | set(TASK_REFUSED)
    assert prefect_options(prefect.Flow) == FLOW_IMPLEMENTED | FLOW_DISPLAY | set(FLOW_REFUSED)


def assert_refused_in_one_line(error: pytest.ExceptionInfo[BaseException], option: str) -> None:
    message = str(error.value)
    assert option in message and "docs/prefect.md" in message and "\n" not in message, message


@pytest.mark.parametrize("option", sorted(TASK_REFUSED))
def test_task_options_needing_prefect_are_refused_at_decoration(option: str):
    for decorate in (task, lambda **o: materialize("s3://refused/x", **o)):
        with pytest.raises(TypeError) as error:
            decorate(**{option: TASK_REFUSED[option]})
        assert_refused_in_one_line(error, option)


@pytest.mark.parametrize("option", sorted(FLOW_REFUSED))
def test_flow_options_needing_prefect_are_refused_at_decoration(option: str):
    with pytest.raises(TypeError) as error:
        flow(**{option: FLOW_REFUSED[option]})
    assert_refused_in_one_line(error, option)


def test_values_asking_for_what_the_runtime_does_anyway_are_accepted():
    task(cache_result_in_memory=True, refresh_cache=False, cache_policy=NO_CACHE)(lambda: 1)
    task(cache_policy=DEFAULT, persist_result=True)(lambda: 1)
    flow(persist_result=False, validate_parameters=False, cache_result_in_memory=True)(lambda: 1)


def test_other_cache_policies_are_refused():
    with pytest.raises(TypeError) as error:
        task(cache_policy=object())
    assert_refused_in_one_line(error, "cache_policy")


def test_transaction_import_is_refused_in_one_line():
    with pytest.raises(ImportError) as error:
        from assetlog.producer import transaction  # noqa: F401
    assert_refused_in_one_line(error, "transaction")


def test_generator_task_limits_are_refused():
    def numbers():
        yield 1

    async def async_numbers():
        yield 1

    for options in ({"retries": 1}, {"timeout_seconds": 5}, {"persist_result": True}):
        with pytest.raises(TypeError) as error:
            task(**options)(numbers)
        assert_refused_in_one_line(error, "generator")
    with pytest.raises(TypeError) as error:
        task(async_numbers)
    assert_refused_in_one_line(error, "async generator")

    @flow
    def pipeline() -> None:
        task(numbers).submit()

    with pytest.raises(TypeError) as error:
        pipeline()
    assert_refused_in_one_line(error, ".submit()")
