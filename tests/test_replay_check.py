"""`assetlog replay --check`: a rebuild from the topics compared with the live tables, row for row."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from events_factory import (
    EPOCH,
    LOOKUP,
    SALES,
    WHOLE_EVENT,
    Publisher,
    TaskRun,
    Upstream,
    dump_tables,
    end_offsets,
    events_of,
    guide_pipelines,
    publish,
)
from replay_support import LiveConsumer, assetlog, realistic_runs, replay, stored_offsets

from assetlog.consumers import run_until_caught_up
from assetlog.projections import migrate
from assetlog.schemas import DEPENDENCY

TABLES = ("asset_properties", "assets", "lineage_history", "asset_edges")


def by_table(summary: dict) -> dict[str, dict]:
    return {t["table"]: t for t in summary["tables"]}


def test_check_reports_no_drift_after_10k_events_with_consumers_restarted(isolated):
    migrate(isolated.dsn)
    events = realistic_runs(10_500)
    waves = [events[:4000], events[4000:8000], events[8000:]]
    published = publish(isolated.settings, waves[0])
    # Restart 1: live consumers stopped mid-stream, after their second batch.
    for name in ("properties", "lineage"):
        with LiveConsumer(isolated, name, batch_size=500) as live:
            while live.runner.stats.batches < 2 and live.thread.is_alive():
                live.thread.join(0.01)
    published += publish(isolated.settings, waves[1])
    # Restart 2: both consumers run at once until they caught up with the second wave, then stop.
    with LiveConsumer(isolated, "properties") as properties, LiveConsumer(isolated, "lineage") as lineage:
        for live in (properties, lineage):
            live.wait_for(isolated.dsn, end_offsets(p for _t, _r, p in published))
    # Restart 3: the last wave, with poison messages that both projections dead-letter.
    published += publish(isolated.settings, waves[2])
    poison = Publisher(isolated.settings)
    for value in (b"", b"not avro", b"\xc3\x01" + b"\x00" * 8):
        poison.raw(isolated.settings.topics.metadata, b"s3://x", value)
    poison.flush()
    for name in ("properties", "lineage"):
        run_until_caught_up(name, isolated.settings)

    summary = replay(isolated, "all", "--check", "--workers", "2")  # the partitions shared by two processes

    assert summary["mode"] == "check" and summary["drift"] is False and summary["workers"] == 2
    assert summary["messages"] == len(events) + 3
    tables = by_table(summary)
    for name in TABLES:
        assert (tables[name]["missing"], tables[name]["extra"], tables[name]["different"]) == (0, 0, 0), tables[name]
        assert tables[name]["live_rows"] == tables[name]["rebuilt_rows"] > 0
    assert tables["lineage_history"]["live_rows"] == len(events)
    assert tables["dead_letters (lineage)"]["live_rows"] == tables["dead_letters (properties)"]["live_rows"] == 3
    assert summary["offsets"]["lineage"] == summary["offsets"]["properties"]


def test_check_reports_corrupted_live_rows_as_drift_and_a_replay_repairs_them(isolated):
    migrate(isolated.dsn)
    publish(isolated.settings, events_of(guide_pipelines()))
    for name in ("properties", "lineage"):
        run_until_caught_up(name, isolated.settings)
    healthy = dump_tables(isolated.dsn)
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("UPDATE assets SET last_status = 'FAILED' WHERE key = %s", (SALES,))
        conn.execute("DELETE FROM asset_edges WHERE upstream_key = %s", (LOOKUP,))
        conn.execute("INSERT INTO asset_properties (key, name, event_time, event_id) "
                     "VALUES ('s3://ghost/x', 'ghost', now(), gen_random_uuid())")
        conn.execute("ALTER TABLE lineage_history DISABLE TRIGGER lineage_history_append_only")
        lost = conn.execute("DELETE FROM lineage_history WHERE event_id = (SELECT event_id "
                            "FROM lineage_history ORDER BY event_id LIMIT 1) RETURNING event_id::text").fetchone()[0]
        conn.execute("ALTER TABLE lineage_history ENABLE TRIGGER lineage_history_append_only")

    human = assetlog(isolated, "replay", "all", "--check")
    assert human.code == 1
    assert human.stderr.strip().splitlines() == [
        "assetlog: drift in asset_properties (1 extra), assets (1 different), lineage_history (1 missing), "
        "asset_edges (1 missing): the live tables differ from a rebuild from the topics; `assetlog replay all` "
        "replaces them"]
    assert f'assets different: {{"key": "{SALES}"}} last_status: live "FAILED" != rebuilt "SUCCEEDED"' in human.stdout
    assert "s3://ghost/x" in human.stdout and lost in human.stdout and LOOKUP in human.stdout

    report = assetlog(isolated, "replay", "all", "--check", "--json")
    assert report.code == 1
    tables = by_table(report.json())
    assert report.json()["drift"] is True
    assert {name: (t["missing"], t["extra"], t["different"]) for name, t in tables.items()} == {
        "asset_properties": (0, 1, 0), "assets": (0, 0, 1), "lineage_history": (1, 0, 0), "asset_edges": (1, 0, 0),
        "dead_letters (properties)": (0, 0, 0), "dead_letters (lineage)": (0, 0, 0)}
    assert tables["assets"]["examples"]["different"] == [
        {"key": {"key": SALES}, "columns": {"last_status": {"live": "FAILED", "rebuilt": "SUCCEEDED"}}}]
    assert tables["lineage_history"]["examples"]["missing"][0]["key"]["event_id"] == lost  # key: (event_id, event_time)
    assert tables["asset_properties"]["examples"]["extra"][0]["row"]["name"] == "ghost"

    replay(isolated, "all")  # the repair: the rebuild replaces the live tables
    assert dump_tables(isolated.dsn) == healthy
    assert replay(isolated, "all", "--check")["drift"] is False


def test_check_compares_rows_at_the_live_offsets_and_reports_the_lag_to_the_end(isolated):
    """A consumer that lags is not drift (the rebuild stops where the live consumer is), but it is not
    healthy either: every partition short of the end is named, and the check exits 1."""
    migrate(isolated.dsn)
    first = publish(isolated.settings, realistic_runs(600, seed=1))
    for name in ("properties", "lineage"):
        run_until_caught_up(name, isolated.settings)
    later = publish(isolated.settings, realistic_runs(400, seed=2, start=10_000))  # not consumed yet

    result = assetlog(isolated, "replay", "all", "--check", "--json", "--grace", "0")
    assert result.code == 1, result.stderr[-2000:]
    summary = result.json()

    assert summary["drift"] is False
    ends = end_offsets(p for _t, _r, p in first + later)
    for name in ("properties", "lineage"):
        behind = {(b["topic"], b["partition"]): (b["offset"], b["end"], b["state"])
                  for b in summary["behind"] if b["projection"] == name}
        assert behind == {tp: (end_offsets(p for _t, _r, p in first).get(tp, 0), end, "stuck")
                          for tp, end in ends.items()}
    assert summary["messages"] == len(first)
    live = end_offsets(p for _t, _r, p in first)
    for name in ("properties", "lineage"):
        assert stored_offsets(isolated.dsn, name) == live
        reached = {(t, int(p)): o for t, parts in summary["offsets"][name].items() for p, o in parts.items()}
        assert {tp: o for tp, o in reached.items() if o} == live


def test_check_while_live_consumers_and_a_producer_run(isolated):
    """Compared at the same offsets (live consumers paused meanwhile), so events streaming in are no drift."""
    import threading

    migrate(isolated.dsn)
    first = publish(isolated.settings, realistic_runs(3000, seed=3))
    stop = threading.Event()

    def stream() -> None:
        batch = 0
        while not stop.is_set():
            batch += 1
            publish(isolated.settings, realistic_runs(100, seed=100 + batch, start=20_000 + 1000 * batch))

    producer = threading.Thread(target=stream, daemon=True)
    with LiveConsumer(isolated, "properties") as properties, LiveConsumer(isolated, "lineage") as lineage:
        for live in (properties, lineage):
            live.wait_for(isolated.dsn, end_offsets(p for _t, _r, p in first))
        producer.start()
        try:
            summary = replay(isolated, "all", "--check")
        finally:
            stop.set()
            producer.join(30)
        assert properties.error is None and lineage.error is None
    assert summary["drift"] is False, [t for t in summary["tables"] if t["missing"] or t["extra"] or t["different"]]
    assert summary["messages"] >= 3000


def test_check_compares_history_payloads_written_before_0009_by_the_event_they_hold(isolated):
    """Rows written before migration 0009 hold the whole event in `payload`, a rebuild only the fields
    without a column: the check compares the events, so the two forms agree, and a payload that says
    something else is still drift."""
    migrate(isolated.dsn)
    publish(isolated.settings, events_of(guide_pipelines()))
    run_until_caught_up("lineage", isolated.settings)
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("ALTER TABLE lineage_history DISABLE TRIGGER lineage_history_append_only")
        conn.execute(f"UPDATE lineage_history SET payload = {WHOLE_EVENT}")  # as a version before 0009 wrote it
        assert conn.execute("SELECT count(*) FROM lineage_history WHERE payload ? 'run'").fetchone()[0] > 0
        conn.execute("ALTER TABLE lineage_history ENABLE TRIGGER lineage_history_append_only")

    assert replay(isolated, "lineage", "--check")["drift"] is False

    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("ALTER TABLE lineage_history DISABLE TRIGGER lineage_history_append_only")
        changed = conn.execute(
            "UPDATE lineage_history SET payload = jsonb_set(payload, '{producer,host}', '\"other\"') WHERE event_id = "
            "(SELECT event_id FROM lineage_history ORDER BY event_id LIMIT 1) RETURNING event_id::text").fetchone()[0]
        conn.execute("ALTER TABLE lineage_history ENABLE TRIGGER lineage_history_append_only")
    report = assetlog(isolated, "replay", "lineage", "--check", "--json")
    assert report.code == 1
    history = by_table(report.json())["lineage_history"]
    assert (history["missing"], history["extra"], history["different"]) == (0, 0, 1)
    [example] = history["examples"]["different"]
    assert example["key"]["event_id"] == changed and list(example["columns"]) == ["payload"]
    assert example["columns"]["payload"]["live"]["producer"]["host"] == "other"
    assert example["columns"]["payload"]["rebuilt"]["run"] == example["columns"]["payload"]["live"]["run"]


def test_check_all_rebuilds_each_projection_to_its_own_live_offsets(isolated):
    """The lineage consumer is ahead of the properties consumer: one read serves both rebuilds, and the
    messages past the properties consumer's offsets must reach the lineage rebuild only."""
    migrate(isolated.dsn)
    publish(isolated.settings, realistic_runs(500, seed=3))
    run_until_caught_up("properties", isolated.settings)
    publish(isolated.settings, realistic_runs(500, seed=4, start=10_000))
    run_until_caught_up("lineage", isolated.settings)
    assert stored_offsets(isolated.dsn, "properties") != stored_offsets(isolated.dsn, "lineage")

    result = assetlog(isolated, "replay", "all", "--check", "--json", "--grace", "0")
    assert result.code == 1, result.stderr[-2000:]  # the properties consumer is behind the end: named, not drift
    summary = result.json()
    assert summary["drift"] is False and {b["projection"] for b in summary["behind"]} == {"properties"}
    tables = by_table(summary)
    for name in TABLES:
        assert (tables[name]["missing"], tables[name]["extra"], tables[name]["different"]) == (0, 0, 0), tables[name]


def test_a_replays_edges_count_a_refused_dependency_event_for_nothing_and_a_redelivery_once(isolated):
    """A replay makes `asset_edges` from its history (`derive_edges`), the live consumer batch by batch:
    an event id met again with another time (and here EXPLICIT) is refused by both, a redelivery is the
    same event. Both ways must give the same edge; and a check against live tables finds no drift."""
    migrate(isolated.dsn)
    events = TaskRun(["s3://b/down.csv"], [Upstream("s3://b/up.csv", "INFERRED")], time=EPOCH).events()
    dependency = next(record for event_type, record in events if event_type == DEPENDENCY)
    moved = {**dependency, "event_time": EPOCH + timedelta(days=3), "declared": "EXPLICIT"}
    publisher = Publisher(isolated.settings)
    for event_type, record in [*events, (DEPENDENCY, moved), (DEPENDENCY, dependency)]:
        publisher.event(event_type, record)
    publisher.flush()
    assert run_until_caught_up("lineage", isolated.settings).dead_letters == 1
    run_until_caught_up("properties", isolated.settings)
    live = dump_tables(isolated.dsn)
    with psycopg.connect(isolated.dsn) as conn:
        assert conn.execute("SELECT declared, first_seen, last_seen FROM asset_edges").fetchall() == [
            ("inferred", EPOCH, EPOCH)]

    assert replay(isolated, "all", "--check")["drift"] is False
    replay(isolated, "all")
    assert dump_tables(isolated.dsn) == live
