"""`assetlog status`: lag per projection from the real broker and database, and its exit codes.

The rules that turn a report into findings (`attention`) are pure and tested
on reports built by hand; the command itself runs against the real stack:
lag equals what was published while no consumer ran, falls to 0 once they
catch up (exit 0), and a dead letter, an unmigrated database or an
unreachable broker each make it exit 1 with the finding named.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import Isolated
from events_factory import Publisher, guide_pipelines, publish

from assetlog.consumers import run_until_caught_up
from assetlog.projections import migrate
from assetlog.projections.events import VALIDATION_KIND
from assetlog.schemas.compiled import READER_KIND
from assetlog.status import Thresholds, attention
from assetlog.status_cli import render

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def healthy() -> dict:
    projection = {"offsets": {"t[0]": 10}, "last_commit": NOW - timedelta(seconds=5), "generation": 0,
                  "dead_letters_last_hour": 0, "dead_letters_last_day": 3, "lag": {"t[0]": 0}}
    return {"kafka": {"reachable": True, "bootstrap": "b:1", "missing_topics": [], "topic_settings": "ok"},
            "postgres": {"reachable": True, "schema_version": 4, "schema_expected": 4},
            "outbox": {"events": 0, "oldest_age_seconds": None},
            "projections": {"properties": projection, "lineage": dict(projection)}}


def test_a_healthy_report_needs_no_attention() -> None:
    assert attention(healthy(), Thresholds(), NOW) == []


@pytest.mark.parametrize(("change", "finding"), [
    (lambda r: r["kafka"].update(reachable=False, error="timed out"), "Kafka is not reachable"),
    (lambda r: r["kafka"].update(missing_topics=["x.metadata"]), "topics missing: x.metadata"),
    (lambda r: r["postgres"].update(reachable=False, error="refused"), "PostgreSQL is not reachable"),
    (lambda r: r["postgres"].update(schema_version=3), "run `assetlog db migrate`"),
    (lambda r: r["projections"]["lineage"].update(lag={"t[0]": 1001}), "lineage is 1001 messages behind"),
    (lambda r: r["projections"]["lineage"].update(lag={"t[0]": 5}, last_commit=NOW - timedelta(hours=1)),
     "lineage is 5 messages behind and not moving"),
    (lambda r: r["projections"]["properties"].update(lag={"t[0]": 5}, last_commit=None), "never committed"),
    (lambda r: r["projections"]["properties"].update(dead_letters_last_hour=2), "dead-lettered 2 messages"),
    (lambda r: r["outbox"].update(events=4, oldest_age_seconds=600), "4 events have waited in the local outbox"),
    (lambda r: r["outbox"].update(error="damaged"), "the local outbox: damaged"),
])
def test_each_finding_is_one_line_naming_the_problem(change, finding: str) -> None:
    report = healthy()
    change(report)
    found = attention(report, Thresholds(), NOW)
    assert len(found) == 1 and finding in found[0], found


def test_a_small_lag_that_is_moving_needs_no_attention() -> None:
    report = healthy()
    report["projections"]["lineage"]["lag"] = {"t[0]": 20}
    assert attention(report, Thresholds(), NOW) == []


@pytest.mark.parametrize(("kind", "says"), [("compiled", "decoding   compiled Avro readers"),
                                             ("python", "generated Python Avro readers (the C extension was not built)")])
def test_the_screen_says_which_avro_reader_this_installation_uses(kind: str, says: str) -> None:
    screen = render({**healthy(), "attention": [], "avro_reader": kind, "validation": kind})
    assert says in screen.splitlines()[-3], screen


@pytest.mark.parametrize(("kind", "says"), [("compiled", "validation with its compiled fast path"),
                                             ("python", "validation in Python only (the C extension was not built)")])
def test_the_screen_says_whether_validation_has_its_compiled_fast_path(kind: str, says: str) -> None:
    screen = render({**healthy(), "attention": [], "avro_reader": "compiled", "validation": kind})
    assert says in screen.splitlines()[-2], screen


def status(world: Isolated, **env: str) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-m", "assetlog", "status", "--json"], env=world.env(**env),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def total_lag(report: dict, name: str) -> int:
    return sum(report["projections"][name]["lag"].values())


def test_lag_rises_while_consumers_are_stopped_and_falls_to_zero_when_they_catch_up(isolated: Isolated) -> None:
    migrate(isolated.dsn)
    published = publish(isolated.settings, [e for run in guide_pipelines() for e in run.events()])
    code, report = status(isolated)
    assert report["kafka"]["reachable"] and report["postgres"]["reachable"]
    assert report["avro_reader"] == READER_KIND  # what this installation decodes with, for operators
    assert report["validation"] == VALIDATION_KIND
    for name in ("properties", "lineage"):
        assert total_lag(report, name) == len(published)
    # Behind by less than --max-lag, but no consumer ever committed: that needs a person.
    assert code == 1 and sum("never committed" in line for line in report["attention"]) == 2
    for name in ("properties", "lineage"):
        run_until_caught_up(name, isolated.settings)
    code, report = status(isolated)
    assert code == 0 and report["attention"] == []
    for name in ("properties", "lineage"):
        assert total_lag(report, name) == 0
        assert report["projections"][name]["last_commit"] is not None


def test_a_dead_letter_and_an_unmigrated_database_need_attention(isolated: Isolated) -> None:
    code, report = status(isolated)
    assert code == 1 and any("db migrate" in line for line in report["attention"])
    migrate(isolated.dsn)
    publisher = Publisher(isolated.settings)
    publisher.raw(isolated.settings.topics.metadata, b"s3://x/y", b"not avro at all")
    publisher.flush()
    for name in ("properties", "lineage"):
        run_until_caught_up(name, isolated.settings)
    code, report = status(isolated)
    assert code == 1
    assert sum("dead-lettered 1 messages in the last hour" in line for line in report["attention"]) == 2


def test_an_unreachable_broker_is_named(isolated: Isolated) -> None:
    migrate(isolated.dsn)
    code, report = status(isolated, ASSETLOG_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert code == 1 and report["attention"][0].startswith("Kafka is not reachable at 127.0.0.1:1")
