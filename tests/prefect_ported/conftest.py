"""Fixtures with the names Prefect's asset tests use (see prefect_events.py).

Every test here runs with a publisher on its own isolated world (Prefect's test
harness likewise gives every test its own backend), so no test can publish to the
default topics or outbox of the environment, fixture or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from assetlog.producer import Publisher, publishing

from .prefect_events import EventsWorker


@pytest.fixture(autouse=True)
def world_publisher(isolated: Any) -> Iterator[Publisher]:
    with Publisher(isolated.settings) as publisher, publishing(publisher):
        yield publisher


@pytest.fixture
def asserting_events_worker(isolated: Any, world_publisher: Publisher) -> EventsWorker:
    return EventsWorker(isolated.settings, world_publisher)


@pytest.fixture
def reset_worker_events() -> None:
    """Each test has its own isolated world, so there is nothing to reset."""
