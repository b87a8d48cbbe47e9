"""Test data for the query tests, loaded through the real projections.

The guide's pipelines (tests/events_factory.py) plus shapes the queries must
survive: an as-of scenario (properties overwritten and an upstream added
later), a cycle, a diamond, a long chain and a hub with many dependants.
Every event goes through `PropertiesProjection` and `LineageProjection`
(reduce + set-based apply), exactly what the consumers run per batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from conftest import dsn_as_role
from events_factory import Asset, TaskRun, Upstream, apply_directly, at, events_of, guide_pipelines, props

from assetlog.projections import migrate

READER_ROLE = "assetlog_reader"

# As-of scenario: properties v1 at t=100, a string-key run at t=150, v2 and a new upstream at t=200.
REPORT = "s3://reports/weekly.csv"
SOURCE_A = "postgres://crm/public/accounts"
SOURCE_B = "s3://exports/invoices.csv"
REPORT_V1 = props("Weekly report", "Accounts per region", ["analytics"], "https://bi.example.com/weekly")
REPORT_V2 = props("Weekly report v2", "Accounts and invoices per region", ["analytics", "finance"])
SOURCE_A_PROPS = props("CRM accounts", "The CRM's accounts table", ["crm-team"])

CYCLE = [f"s3://test/cycle/{name}" for name in ("a", "b", "c")]
CYCLE_TAIL = "s3://test/cycle/d"
DIAMOND_TOP, DIAMOND_LEFT, DIAMOND_RIGHT, DIAMOND_BOTTOM = (
    f"s3://test/diamond/{name}" for name in ("top", "left", "right", "bottom"))
CHAIN = [f"s3://test/chain/{i:02d}" for i in range(30)]
HUB = "s3://test/hub/source"
HUB_DEPENDANTS = [f"s3://test/hub/dependant_{i:02d}" for i in range(30)]


def as_of_runs() -> list[TaskRun]:
    return [
        TaskRun([Asset(REPORT, REPORT_V1)], [Upstream(SOURCE_A, "EXPLICIT", SOURCE_A_PROPS)],
                metadata={REPORT: {"rows": 10}}, time=at(100), task_name="weekly"),
        TaskRun([REPORT], [SOURCE_A], metadata={REPORT: {"rows": 15}}, time=at(150), task_name="weekly_refresh"),
        TaskRun([Asset(REPORT, REPORT_V2)], [SOURCE_A, SOURCE_B], metadata={REPORT: {"rows": 20}}, time=at(200),
                task_name="weekly"),
    ]


def shape_runs() -> list[TaskRun]:
    runs = [TaskRun([CYCLE[(i + 1) % 3]], [CYCLE[i]], time=at(300 + i), task_name="cycle") for i in range(3)]
    runs.append(TaskRun([CYCLE_TAIL], [CYCLE[2]], time=at(303), task_name="cycle_tail"))
    runs += [
        TaskRun([DIAMOND_LEFT], [DIAMOND_TOP], time=at(310), task_name="left"),
        TaskRun([DIAMOND_RIGHT], [DIAMOND_TOP], time=at(311), task_name="right"),
        TaskRun([DIAMOND_BOTTOM], [DIAMOND_LEFT, DIAMOND_RIGHT], time=at(312), task_name="bottom"),
    ]
    runs += [TaskRun([CHAIN[i]], [CHAIN[i - 1]], time=at(400 + i), task_name="chain") for i in range(1, 30)]
    runs += [TaskRun([dep], [HUB], time=at(500 + i), task_name="hub") for i, dep in enumerate(HUB_DEPENDANTS)]
    return runs


def all_runs() -> list[TaskRun]:
    return guide_pipelines() + as_of_runs() + shape_runs()


def project(dsn: str, runs: Iterable[TaskRun]) -> None:
    """Migrate, then apply the runs' events with both real projections (one batch each)."""
    migrate(dsn)
    events = events_of(runs)
    with psycopg.connect(dsn) as conn:
        for name in ("properties", "lineage"):
            apply_directly(conn, name, events)


def reader_dsn(dsn: str) -> str:
    """The same database as the read-only role."""
    return dsn_as_role(dsn, READER_ROLE)
