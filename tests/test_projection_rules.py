"""The projection rules, applied directly to a real PostgreSQL (no Kafka): what each row must say."""

from __future__ import annotations

import random
import threading
import time
import tracemalloc
import uuid

import psycopg
import pytest
from events_factory import (
    BRONZE,
    CUSTOMERS,
    CUSTOMERS_PROPS,
    DASHBOARD,
    DASHBOARD_V1,
    DASHBOARD_V2,
    FINAL,
    GOLD,
    LOOKUP,
    PROCESSED,
    PROCESSED_PROPS,
    SALES,
    SILVER,
    USERS,
    USERS_PROPS,
    Asset,
    TaskRun,
    Upstream,
    apply_directly,
    at,
    dump_tables,
    events_of,
    guide_pipelines,
    props,
    rows_by_key,
)

from assetlog.projections import InvalidEvent, Position, migrate, to_event
from assetlog.projections.events import event_payload
from assetlog.schemas import DEPENDENCY, MATERIALIZATION, METADATA

KEY = "s3://bucket/report.csv"


@pytest.fixture
def db(isolated):
    migrate(isolated.dsn)
    with psycopg.connect(isolated.dsn) as conn:
        yield conn


def project(conn, events, projections=("properties", "lineage")) -> None:
    for name in projections:
        apply_directly(conn, name, events)


def properties_of(dsn: str, key: str) -> dict | None:
    row = rows_by_key(dsn, "asset_properties").get(key)
    return None if row is None else {f: row[f] for f in ("name", "description", "owners", "url")}


def test_guide_pipelines_project_the_expected_rows(db, isolated):
    runs = guide_pipelines()
    project(db, events_of(runs))
    dsn = isolated.dsn
    assert properties_of(dsn, CUSTOMERS) == CUSTOMERS_PROPS
    assert properties_of(dsn, PROCESSED) == PROCESSED_PROPS
    assert properties_of(dsn, USERS) == USERS_PROPS  # an external upstream's properties from asset_deps
    assert properties_of(dsn, DASHBOARD) == {**DASHBOARD_V2, "url": None}  # overwritten as a whole
    assert set(rows_by_key(dsn, "asset_properties")) == {CUSTOMERS, PROCESSED, USERS, DASHBOARD}

    assets = rows_by_key(dsn, "assets")
    assert set(assets) == {CUSTOMERS, PROCESSED, SALES, USERS, FINAL, BRONZE, SILVER, LOOKUP, GOLD, DASHBOARD}
    processed = assets[PROCESSED]
    assert processed["metadata"] == {"record_count": 1500}
    assert processed["metadata_materialization_event_id"] == processed["last_materialization_event_id"]
    assert assets[SALES]["metadata"] == {"rows": 10, "columns": 3, "quality": {"nulls": 0}}
    assert assets[SALES]["last_materialized_by"] == "dbt"
    for referenced_only in (USERS, LOOKUP):
        row = assets[referenced_only]
        assert row["last_materialized_at"] is None and row["last_status"] is None and row["metadata"] is None
    gold = assets[GOLD]
    assert (gold["first_seen"], gold["last_seen"], gold["last_materialized_at"]) == (at(52), at(90), at(90))
    assert (gold["last_status"], gold["last_error_type"], gold["last_error_message"]) == (
        "FAILED", "ValueError", "negative revenue")
    assert gold["metadata"] == {"partial": True}  # kept when the task failed
    assert assets[SILVER]["last_seen"] == at(90)  # named as an upstream by the failed run
    assert (assets[DASHBOARD]["first_seen"], assets[DASHBOARD]["last_materialized_at"]) == (at(60), at(80))

    with psycopg.connect(dsn) as conn:
        edges = {(u, d): (declared, first, last) for u, d, declared, first, last in conn.execute(
            "SELECT upstream_key, downstream_key, declared, first_seen, last_seen FROM asset_edges")}
        history = conn.execute("SELECT event_type, count(*) FROM lineage_history GROUP BY 1 ORDER BY 1").fetchall()
    assert edges == {
        (CUSTOMERS, PROCESSED): ("inferred", at(20), at(20)),
        (USERS, FINAL): ("explicit", at(40), at(40)),
        (BRONZE, SILVER): ("inferred", at(51), at(51)),
        (LOOKUP, SILVER): ("explicit", at(51), at(51)),
        (SILVER, GOLD): ("inferred", at(52), at(90)),
        (GOLD, DASHBOARD): ("inferred", at(60), at(80)),
    }
    assert (BRONZE, GOLD) not in edges  # a materializing task passes on only its own assets
    assert history == [("dependency", 9), ("materialization", 11), ("metadata", 3)]


def test_lineage_history_keeps_every_field_of_every_event(db, isolated):
    run = TaskRun([Asset(KEY, props("Report"))], [Upstream("s3://bucket/in.csv", "EXPLICIT")],
                  metadata={KEY: {"rows": 3}}, status="FAILED", error=("KeyError", "'x'"), time=at(5),
                  task_name="build", flow_name="nightly")
    events = run.events()
    positioned = [(t, r, Position(f"t.{t}", 1, 40 + i)) for i, (t, r) in enumerate(events)]
    project(db, positioned, ("lineage",))
    rows = {row[0]: row for row in db.execute(
        "SELECT event_type, asset_key, upstream_key, status, materialization_event_id, flow_run_id, flow_name, "
        "task_run_id, task_name, event_time, payload, kafka_topic, kafka_partition, kafka_offset FROM lineage_history")}
    materialization_id = uuid.UUID(events[0][1]["event_id"])
    for event_type, offset in ((MATERIALIZATION, 40), (DEPENDENCY, 41), (METADATA, 42)):
        row = rows[event_type]
        assert row[1] == KEY and row[3] == "FAILED" and row[4] == materialization_id
        assert (str(row[5]), row[6], str(row[7]), row[8]) == (run.flow_run_id, "nightly", run.task_run_id, "build")
        assert row[9] == at(5) and (row[11], row[12], row[13]) == (f"t.{event_type}", 1, offset)
    assert rows[DEPENDENCY][2] == "s3://bucket/in.csv" and rows[MATERIALIZATION][2] is None
    assert rows[MATERIALIZATION][10]["error"] == {"type": "KeyError", "message": "'x'"}
    assert rows[MATERIALIZATION][10]["properties"]["name"] == "Report"
    assert not {"event_id", "event_time", "asset_key", "status", "run"} & set(rows[MATERIALIZATION][10])  # in columns
    assert rows[METADATA][10]["metadata"] == {"rows": 3} and "metadata_json" not in rows[METADATA][10]
    assert rows[DEPENDENCY][10]["declared"] == "EXPLICIT"


def test_properties_last_write_wins_under_shuffled_order(db, isolated):
    times = [at(t) for t in (1, 2, 3, 3, 5)]  # two writes share a time: the event id breaks the tie
    runs = [TaskRun([Asset(KEY, props(f"v{i}", owners=[f"owner{i}"], url=f"https://x/{i}"))], time=t)
            for i, t in enumerate(times)]
    events = events_of(runs)
    newest = max(events, key=lambda e: (e[1]["event_time"], uuid.UUID(e[1]["event_id"])))
    rng = random.Random(4)
    for attempt in range(4):
        order = events[:]
        rng.shuffle(order)
        with db.transaction(force_rollback=True):
            for i in range(0, len(order), 2):  # several batches, in a shuffled order
                apply_directly(db, "properties", order[i:i + 2])
            row = db.execute("SELECT name, url, event_id FROM asset_properties WHERE key = %s", (KEY,)).fetchone()
        assert row == (newest[1]["properties"]["name"], newest[1]["properties"]["url"],
                       uuid.UUID(newest[1]["event_id"])), f"attempt {attempt}"


def test_a_full_overwrite_leaves_url_null(db, isolated):
    project(db, events_of([TaskRun([Asset(DASHBOARD, DASHBOARD_V1)], time=at(1)),
                           TaskRun([Asset(DASHBOARD, DASHBOARD_V2)], time=at(2))]), ("properties",))
    assert properties_of(isolated.dsn, DASHBOARD) == {"name": "Revenue by region",
                                                      "description": "Revenue by region, daily",
                                                      "owners": ["bi-team", "finance"], "url": None}
    # An older full write arriving late changes nothing.
    project(db, events_of([TaskRun([Asset(DASHBOARD, DASHBOARD_V1)], time=at(0))]), ("properties",))
    assert properties_of(isolated.dsn, DASHBOARD)["url"] is None


def test_a_string_key_materialization_never_touches_properties(db, isolated):
    project(db, events_of([TaskRun([Asset(KEY, props("Report", "Monthly", ["bi"], "https://r"))], time=at(1))]),
            ("properties",))
    before = rows_by_key(isolated.dsn, "asset_properties")[KEY]
    later = [TaskRun([KEY], time=at(9)),  # newer, but a plain key: no properties
             TaskRun(["s3://bucket/next.csv"], [KEY], time=at(10))]  # KEY as a plain upstream
    project(db, events_of(later), ("properties",))
    assert rows_by_key(isolated.dsn, "asset_properties")[KEY] == before
    assert rows_by_key(isolated.dsn, "assets")[KEY]["last_materialized_at"] == at(9)


def test_upstream_properties_given_in_asset_deps_win_when_newer(db, isolated):
    project(db, events_of([
        TaskRun([Asset(USERS, props("Users v1", url="https://old"))], time=at(1)),
        TaskRun([FINAL], [Upstream(USERS, "EXPLICIT", props("Users v2"))], time=at(2)),
        TaskRun([SALES], [Upstream(USERS, "EXPLICIT", props("Users v0"))], time=at(0)),
    ]), ("properties",))
    assert properties_of(isolated.dsn, USERS) == {"name": "Users v2", "description": None, "owners": None,
                                                  "url": None}


def test_metadata_is_the_newest_materialization_that_recorded_some(db, isolated):
    project(db, events_of([TaskRun([KEY], metadata={KEY: {"rows": 1}}, time=at(1)),
                           TaskRun([KEY], metadata={KEY: {"rows": 2}}, time=at(2)),
                           TaskRun([KEY], time=at(3))]), ("properties",))  # the newest recorded none
    row = rows_by_key(isolated.dsn, "assets")[KEY]
    assert row["metadata"] == {"rows": 2} and row["metadata_time"] == at(2)
    assert row["last_materialized_at"] == at(3)
    assert row["metadata_materialization_event_id"] != row["last_materialization_event_id"]


def test_an_edge_declared_explicit_once_stays_explicit(db, isolated):
    up, down = "s3://bucket/up.csv", "s3://bucket/down.csv"
    project(db, events_of([TaskRun([down], [Upstream(up, "INFERRED")], time=at(5)),
                           TaskRun([down], [Upstream(up, "EXPLICIT")], time=at(3)),
                           TaskRun([down], [Upstream(up, "INFERRED")], time=at(7))]), ("lineage",))
    row = db.execute("SELECT declared, first_seen, last_seen FROM asset_edges").fetchone()
    assert row == ("explicit", at(3), at(7))


def test_duplicate_delivery_changes_nothing(db, isolated):
    events = [(t, r, Position(f"topic.{t}", 0, i)) for i, (t, r) in enumerate(events_of(guide_pipelines()))]
    project(db, events)
    before = dump_tables(isolated.dsn)
    redelivered = [(t, r, Position(p.topic, p.partition, p.offset + 1000)) for t, r, p in events]
    project(db, events)  # the same messages again
    project(db, redelivered[::-1])  # a producer's duplicates, later in the log, in reverse order
    assert dump_tables(isolated.dsn) == before


@pytest.mark.parametrize(("event_type", "change", "reason"), [
    (MATERIALIZATION, {"asset_key": "not a uri"}, "invalid-key"),
    (MATERIALIZATION, {"upstream_keys": ["s3://ok/a.csv", "bad#key://x"]}, "invalid-key"),
    (MATERIALIZATION, {"event_id": "42"}, "invalid-uuid"),
    (MATERIALIZATION, {"properties": {"name": "nul\x00name", "description": None, "owners": None, "url": None}},
     "invalid-text"),
    (DEPENDENCY, {"upstream_key": "ftp//missing-colon"}, "invalid-key"),
    (DEPENDENCY, {"materialization_event_id": "not-a-uuid"}, "invalid-uuid"),
    (METADATA, {"metadata_json": "[1, 2]"}, "invalid-metadata"),
    (METADATA, {"metadata_json": "{\"x\": NaN}"}, "invalid-metadata"),
    (METADATA, {"metadata_json": "{broken"}, "invalid-metadata"),
    (METADATA, {"metadata_json": "{\"x\": \"\\u0000\"}"}, "invalid-text"),
    (METADATA, {"metadata_json": "{\"x\": \"\\ud800\"}"}, "invalid-text"),
])
def test_invalid_events_are_refused_with_a_reason(event_type, change, reason):
    run = TaskRun([KEY], ["s3://bucket/in.csv"], metadata={KEY: {"a": 1}})
    record = next(dict(r) for t, r in run.events() if t == event_type)
    record.update(change)
    with pytest.raises(InvalidEvent) as caught:
        to_event(event_type, record)
    assert caught.value.reason == reason


@pytest.mark.parametrize("text_checked", [False, True])
def test_bad_text_deep_in_metadata_is_named_by_its_path(text_checked):
    """The dead letter says where: also when the decoder vouched for the raw text (an escape in the JSON
    can still make a NUL or a lone surrogate)."""
    run = TaskRun([KEY], metadata={KEY: {"a": 1}})
    record = next(dict(r) for t, r in run.events() if t == METADATA)
    for text, path in (('{"a": {"b": [1, "x\\u0000"]}}', "metadata_json.a.b[1]"),
                       ('{"a": [{"c\\ud800": 2}]}', "metadata_json.a[0]")):
        record["metadata_json"] = text
        with pytest.raises(InvalidEvent) as caught:
            to_event(METADATA, record, text_checked=text_checked)
        assert caught.value.reason == "invalid-text" and caught.value.detail.startswith(f"{path} "), caught.value.detail


def test_text_that_merely_spells_an_escape_is_valid():
    run = TaskRun([Asset(KEY, props("literally \\u0000 here"))], metadata={KEY: {"big": 2**80}})
    for event_type, record in run.events():
        event = to_event(event_type, record)
        assert b"\\\\u0000" in event_payload(event) or event_type == METADATA
    metadata = next(to_event(t, r) for t, r in run.events() if t == METADATA)
    assert metadata.metadata == {"big": 2**80} and b"1208925819614629174706176" in event_payload(metadata)


def test_a_payload_holds_no_more_memory_than_its_bytes():
    """A batch keeps one payload per event until it commits: each must be an exact-size bytes object
    (orjson returns its 4 KiB working buffer, which made a lineage consumer's batches of 20,000 hold
    80 MiB of payloads instead of 10)."""
    run = TaskRun([Asset(KEY, props("a description"))], metadata={KEY: {"rows": 1}})
    events = [to_event(event_type, record) for event_type, record in run.events()]
    tracemalloc.start()
    try:
        payloads = [event_payload(event) for event in events for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    text = sum(len(payload) for payload in payloads)
    assert held < 1.5 * text + 100 * len(payloads), (held, text)


def test_history_stays_exact_when_another_process_stores_the_same_event_meanwhile(db, isolated):
    """The fast path COPYs straight into lineage_history after filtering stored ids; an id stored by
    a concurrent transaction in between makes the COPY fail, and the batch falls back to a staged
    INSERT ... ON CONFLICT DO NOTHING."""
    events = events_of([TaskRun([KEY]), TaskRun(["s3://bucket/other.csv"])])
    with psycopg.connect(isolated.dsn) as other:
        with other.transaction():
            apply_directly(other, "lineage", events[:1])  # not committed yet: invisible to the filter
            worker = threading.Thread(target=apply_directly, args=(db, "lineage", events))
            worker.start()
            time.sleep(0.5)  # the worker's COPY now waits on the unique index for this transaction
        worker.join(30)
    assert not worker.is_alive()
    assert db.execute("SELECT count(*) FROM lineage_history").fetchone()[0] == 2


def test_a_last_write_wins_tie_at_the_newest_time_is_decided_by_event_id(db, isolated):
    """Two writes share the newest event_time: the greater event id (as PostgreSQL orders uuids) wins,
    for the properties and for the last materialization, whichever arrives first, in one batch or
    in two."""
    low, high = "00000000-0000-4000-8000-000000000001", "ffffffff-ffff-4fff-bfff-ffffffffffff"
    older = TaskRun([Asset(KEY, props("older", url="https://older"))], time=at(1)).events()
    runs = {}
    for name, event_id in (("low", low), ("high", high)):
        events = TaskRun([Asset(KEY, props(name, url=f"https://{name}"))], time=at(5), status="FAILED"
                         if name == "low" else "SUCCEEDED").events()
        events[0][1]["event_id"] = event_id
        runs[name] = events
    orders = [older + runs["low"] + runs["high"], older + runs["high"] + runs["low"],
              runs["high"] + runs["low"] + older]
    for order in orders:
        for split in (False, True):
            with db.transaction(force_rollback=True):
                if split:  # each event its own batch: the database's upsert decides
                    for event in order:
                        apply_directly(db, "properties", [event])
                else:  # one batch: the in-batch merge decides
                    apply_directly(db, "properties", order)
                name = db.execute("SELECT name FROM asset_properties WHERE key = %s", (KEY,)).fetchone()[0]
                last = db.execute("SELECT last_materialization_event_id::text, last_status FROM assets "
                                  "WHERE key = %s", (KEY,)).fetchone()
            assert (name, last) == ("high", (high, "SUCCEEDED")), (order, split)


def test_a_full_overwrite_between_two_separately_applied_batches_clears_every_field(db, isolated):
    """The newer properties replace the stored ones as a whole, when they arrive in a later batch (a
    later transaction) too: fields the newer write lacks become null, lists are replaced, not merged."""
    with db.transaction():
        apply_directly(db, "properties", events_of([TaskRun([Asset(DASHBOARD, DASHBOARD_V1)], time=at(1))]))
    assert properties_of(isolated.dsn, DASHBOARD)["url"] == DASHBOARD_V1["url"]
    with db.transaction():
        apply_directly(db, "properties", events_of([TaskRun([Asset(DASHBOARD, props("only a name"))], time=at(2))]))
    assert properties_of(isolated.dsn, DASHBOARD) == {"name": "only a name", "description": None, "owners": None,
                                                      "url": None}
