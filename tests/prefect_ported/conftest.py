"""Fixtures with the names Prefect's asset tests use (see prefect_events.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prefect_events import EventsWorker

from assetlog.producer import Publisher, publishing


@pytest.fixture
def asserting_events_worker(isolated: Any) -> Iterator[EventsWorker]:
    with Publisher(isolated.settings) as publisher, publishing(publisher):
        yield EventsWorker(isolated.settings, publisher)


@pytest.fixture
def reset_worker_events() -> None:
    """Each test has its own isolated world, so there is nothing to reset."""
