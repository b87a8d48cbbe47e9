"""Task result caching: Prefect's default policy, within one flow run.

Prefect caches a task's result when results are persisted (`persist_result=True`,
or a cache option given) under a key made of the task's source, its inputs and
the flow run's id (the `DEFAULT` policy), and a cache hit runs nothing and emits
no asset event. Because the flow run id is part of that key, such a cache never
outlives its flow run, so keeping it in memory gives Prefect's semantics exactly.
Keys that outlive a run (`cache_key_fn`, other policies) need Prefect's result
storage and are refused (see docs/prefect.md).
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from assetlog.producer.attempts import run_hooks
from assetlog.producer.states import completed

if TYPE_CHECKING:
    from assetlog.producer.runtime import TaskRun
    from assetlog.producer.tasks import Task


class CachePolicy:
    """A named marker; only `DEFAULT` and `NO_CACHE` exist in Assetlog's runtime."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DEFAULT = CachePolicy("DEFAULT")
NO_CACHE = CachePolicy("NO_CACHE")

BRIDGE = "run the flow with Prefect and the Assetlog bridge (docs/prefect.md)"


def check_cache_options(options: dict[str, Any]) -> None:
    """Refuse, at decoration, the cache options whose keys outlive a flow run."""
    harmless = {"refresh_cache": False, "cache_result_in_memory": True}  # what the runtime does anyway
    for name in ("cache_key_fn", "cache_expiration", "refresh_cache", "result_storage", "result_storage_key",
                 "result_serializer", "cache_result_in_memory"):
        value = options.get(name)
        if value is not None and not (name in harmless and value is harmless[name]):
            raise TypeError(f"{name}= needs Prefect's result storage, which Assetlog's built-in runtime "
                            f"does not have: {BRIDGE}")
    policy = options.get("cache_policy")
    if policy is not None and policy is not DEFAULT and policy is not NO_CACHE:
        raise TypeError(f"cache_policy={policy!r}: Assetlog's built-in runtime offers only DEFAULT and NO_CACHE "
                        f"(from assetlog.producer.cache_policies); for other policies {BRIDGE}")


def source_digest(fn: Callable[..., Any]) -> str:
    """Prefect's TASK_SOURCE part: the function's source text (its bytecode if there is none)."""
    try:
        text = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        text = code.co_code if code is not None else repr(fn).encode()
    return hashlib.sha256(text).hexdigest()


def inputs_key(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Prefect's INPUTS part: a digest of the call's parameters by name; None when they
    cannot be hashed (Prefect then does not cache either)."""
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        bound.apply_defaults()
        return hashlib.sha256(pickle.dumps(sorted(bound.arguments.items()), protocol=5)).hexdigest()
    except Exception:
        return None


MISS = object()


def cache_lookup(task: Task[..., Any], run: TaskRun, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> tuple[tuple[str, str] | None, Any]:
    """(the cache key, the cached result or MISS): Prefect's DEFAULT policy within the flow run."""
    if run.flow_run is None:
        return None, MISS  # outside a flow Prefect's key holds the task run's own id: never a hit
    inputs = inputs_key(task.fn, args, kwargs)
    if inputs is None:
        return None, MISS
    key = (task.source_digest(), inputs)
    return key, run.flow_run.cache.get(key, MISS)


def cache_hit(run: TaskRun, result: Any) -> Any:
    """A cache hit runs nothing and emits nothing; its result still carries the run's assets on."""
    assert run.flow_run is not None
    run.flow_run.lineage.link(result, run)
    if run.task.on_completion:
        run_hooks(run.task.on_completion, run.task, run, completed(result, "Cached"))
    return result
