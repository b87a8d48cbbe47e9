"""`@materialize`: a task whose runs materialize assets and emit their lineage events.

It accepts every task option; `by` names the tool that did the work (e.g. dbt).
Assets are validated when the decorator runs, so a bad key fails at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from assetlog.producer.assets import Asset, as_asset, distinct_assets
from assetlog.producer.tasks import Task

P = ParamSpec("P")
R = TypeVar("R")


class MaterializingTask(Task[P, R]):
    """A task that materializes `assets` (one materialization event per asset key per run).

    `assets` is the list as given (Prefect's attribute); a key given twice is
    materialized once, with the properties of its first declaration that has some.
    """

    def __init__(self, fn: Callable[P, R], *, assets: tuple[str | Asset, ...] | list[str | Asset],
                 by: str | None = None, **options: Any) -> None:
        super().__init__(fn, **options)
        self.assets: list[Asset] = [as_asset(asset) for asset in assets]  # as given, like Prefect's
        self.materialized = distinct_assets(self.assets)
        self.asset_keys = frozenset(asset.key for asset in self.materialized)
        if not self.assets:
            raise TypeError("materialize requires at least one asset argument, e.g. `@materialize(asset)`")
        if by is not None and not isinstance(by, str):
            raise TypeError(f"by must be a string naming a tool (e.g. 'dbt'), got {type(by).__name__}")
        self.by = by

    def with_options(self, assets: tuple[str | Asset, ...] | list[str | Asset] | None = None,
                     **options: Any) -> MaterializingTask[P, R]:
        """A copy with some options replaced; `assets=` replaces the whole list."""
        by = options.pop("by", self.by)
        return MaterializingTask(self.fn, assets=list(assets) if assets is not None else list(self.assets),
                                 by=by, **{**self._options(), **options})


def materialize(*assets: str | Asset, by: str | None = None,
                **task_options: Any) -> Callable[[Callable[P, R]], MaterializingTask[P, R]]:
    """Decorate a function as a task that materializes `assets` (keys or `Asset`s)."""
    if not assets:
        raise TypeError("materialize requires at least one asset argument, e.g. `@materialize(asset)`")
    if len(assets) == 1 and callable(assets[0]) and not isinstance(assets[0], (str, Asset)):
        raise TypeError("materialize requires at least one asset argument, e.g. `@materialize(asset)`")
    checked = [as_asset(asset) for asset in assets]  # a bad key fails here, at decoration
    MaterializingTask(_probe, assets=checked, by=by, **task_options)

    def decorator(fn: Callable[P, R]) -> MaterializingTask[P, R]:
        return MaterializingTask(fn, assets=checked, by=by, **task_options)

    return decorator


def _probe() -> None:
    """Stands in for the decorated function while options are checked."""
