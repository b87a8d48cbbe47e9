"""The pipelines of Prefect's assets guide, written against `assetlog.producer`.

Each module is one pattern of the guide with a flow that runs it; `run_all()`
runs every flow (what `assetlog demo` does). They publish through the current
publisher: `publishing(...)` if the caller chose one, else the environment's.
"""

from __future__ import annotations

from typing import Any

from assetlog.examples import (
    accumulating_metadata,
    analytics_pipeline,
    explicit_dependencies,
    external_database,
    mixed_dependencies,
    properties_overwrite,
)


def example_flows() -> list[Any]:
    """Every example flow, in the order the guide presents them."""

    return [
        analytics_pipeline.analytics_pipeline,
        accumulating_metadata.accumulating_metadata,
        explicit_dependencies.explicit_dependencies_flow,
        mixed_dependencies.mixed_dependencies,
        external_database.external_database_flow,
        properties_overwrite.properties_overwrite,
    ]


def run_all() -> list[str]:
    """Run every example flow once; returns their names."""
    names = []
    for example in example_flows():
        example()
        names.append(example.name)
    return names


__all__ = ["example_flows", "run_all"]
