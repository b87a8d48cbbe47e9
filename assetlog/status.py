"""`assetlog status`: one look at everything an operator needs, and whether any of it needs attention.

It reads what the stages already keep: the broker (reachable, the event
topics and their settings, where each partition ends), the projection
database (reachable, migrated, each projection's stored offsets and last
commit, the dead letters of the last hour and day, the replay generation) and
the local outbox. Lag is the topic's end minus the offset stored with the
projection's rows. Each finding that needs a person is one line in
`attention`, and makes the command exit non-zero, so it can back a health check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from assetlog.config import Settings
from assetlog.consumers.positions import end_offsets, event_partitions
from assetlog.errors import AssetlogError
from assetlog.producer.cli import read_status
from assetlog.projections.events import VALIDATION_KIND
from assetlog.projections.migrate import schema_version, shipped_migrations
from assetlog.schemas.compiled import READER_KIND
from assetlog.topics import TopicError, list_topic_names, verify_topic_settings

PROJECTIONS = ("properties", "lineage")


@dataclass(frozen=True)
class Thresholds:
    """When a finding needs attention."""

    max_lag: int = 1000  # messages a projection may be behind in all
    stale_seconds: float = 300.0  # a projection with lag that committed nothing for this long is stuck
    outbox_age_seconds: float = 60.0  # events older than this still in the local outbox


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def kafka_status(settings: Settings) -> dict[str, Any]:
    """Reachability, the event topics with their partitions and settings, and where each partition ends."""
    report: dict[str, Any] = {"bootstrap": settings.kafka_bootstrap, "reachable": False, "topics": {}, "ends": {}}
    try:
        admin, names = list_topic_names(settings, timeout=10)
        report["reachable"] = True
        wanted = settings.topics.events
        report["missing_topics"] = [t for t in wanted if t not in names]
        present = [t for t in wanted if t in names]
        try:
            verify_topic_settings(admin, present, timeout=10)
            report["topic_settings"] = "ok"
        except TopicError as exc:
            report["topic_settings"] = str(exc)
        if not report["missing_topics"]:
            ends = end_offsets(settings, event_partitions(settings, timeout=10), timeout=10)
            report["ends"] = {f"{t}[{p}]": end for (t, p), end in sorted(ends.items())}
            for topic in present:
                report["topics"][topic] = {"partitions": sum(1 for t, _ in ends if t == topic),
                                           "messages_end": sum(e for (t, _), e in ends.items() if t == topic)}
    except AssetlogError as exc:
        report["error"] = str(exc)
    return report


def postgres_status(settings: Settings) -> dict[str, Any]:
    """Reachability, schema version, each projection's offsets, last commit, generation and dead letters."""

    report: dict[str, Any] = {"reachable": False, "projections": {}}
    try:
        with psycopg.connect(settings.require_postgres(), connect_timeout=10, autocommit=True) as conn:
            report["reachable"] = True
            report["database"] = conn.execute("SELECT current_database()").fetchone()[0]
            report["schema_version"] = schema_version(conn)
            report["schema_expected"] = max(m.version for m in shipped_migrations())
            if report["schema_version"] < report["schema_expected"]:
                return report
            for name in PROJECTIONS:
                offsets = {f"{t}[{p}]": o for t, p, o in conn.execute(
                    "SELECT topic, partition, next_offset FROM consumer_offsets WHERE projection = %s "
                    "ORDER BY topic, partition", (name,))}
                last_commit, generation, replayed_at, hour, day = conn.execute(
                    "SELECT (SELECT max(updated_at) FROM consumer_offsets WHERE projection = %(p)s), "
                    "g.generation, g.replayed_at, "
                    "(SELECT count(*) FROM dead_letters WHERE projection = %(p)s "
                    "   AND recorded_at > now() - interval '1 hour'), "
                    "(SELECT count(*) FROM dead_letters WHERE projection = %(p)s "
                    "   AND recorded_at > now() - interval '1 day') "
                    "FROM projection_generations g WHERE g.projection = %(p)s", {"p": name}).fetchone()
                report["projections"][name] = {
                    "offsets": offsets, "last_commit": last_commit, "generation": generation,
                    "replayed_at": replayed_at, "dead_letters_last_hour": hour, "dead_letters_last_day": day}
    except Exception as exc:  # reported, not raised: status describes whatever state there is
        report["error"] = _first_line(exc)
    return report


def outbox_status() -> dict[str, Any]:
    try:
        return read_status()
    except Exception as exc:  # a damaged outbox is a finding, not a crash of the status command
        return {"error": _first_line(exc)}


def lag(kafka: dict[str, Any], projection: dict[str, Any]) -> dict[str, int]:
    """Messages behind per partition: the topic's end minus the offset stored with the rows."""
    offsets = projection.get("offsets", {})
    return {where: end - offsets.get(where, 0) for where, end in kafka.get("ends", {}).items()}


def attention(report: dict[str, Any], limits: Thresholds, now: datetime) -> list[str]:
    """Each finding that needs a person, one line each (pure: tested without servers)."""
    found = []
    kafka, postgres, outbox = report["kafka"], report["postgres"], report["outbox"]
    if not kafka.get("reachable"):
        found.append(f"Kafka is not reachable at {kafka.get('bootstrap')}: {kafka.get('error', 'no answer')}")
    elif kafka.get("missing_topics"):
        found.append(f"topics missing: {', '.join(kafka['missing_topics'])}; run `assetlog topics create`")
    elif kafka.get("topic_settings", "ok") != "ok":
        found.append(kafka["topic_settings"])
    if not postgres.get("reachable"):
        found.append(f"PostgreSQL is not reachable: {postgres.get('error', 'no answer')}")
    elif postgres.get("schema_version", 0) < postgres.get("schema_expected", 0):
        found.append(f"the database is at schema version {postgres['schema_version']}, this Assetlog needs "
                     f"{postgres['schema_expected']}: run `assetlog db migrate`")
    elif postgres.get("error"):
        found.append(f"PostgreSQL: {postgres['error']}")
    for name, projection in report.get("projections", {}).items():
        behind = sum(projection["lag"].values())
        last = projection.get("last_commit")
        idle = (now - last).total_seconds() if isinstance(last, datetime) else None
        if behind > limits.max_lag:
            found.append(f"{name} is {behind} messages behind the end of the topics (more than {limits.max_lag})")
        elif behind and (idle is None or idle > limits.stale_seconds):
            since = "never committed" if idle is None else f"last commit {idle:.0f}s ago"
            found.append(f"{name} is {behind} messages behind and not moving ({since}): is its consumer running?")
        if projection.get("dead_letters_last_hour"):
            found.append(f"{name} dead-lettered {projection['dead_letters_last_hour']} messages in the last hour "
                         "(see the dead_letters table)")
    if outbox.get("error"):
        found.append(f"the local outbox: {outbox['error']}")
    elif (outbox.get("oldest_age_seconds") or 0) > limits.outbox_age_seconds:
        found.append(f"{outbox.get('events')} events have waited in the local outbox for "
                     f"{outbox['oldest_age_seconds']:.0f}s: is Kafka reachable from here? (`assetlog outbox flush`)")
    return found


def gather(settings: Settings, limits: Thresholds = Thresholds()) -> dict[str, Any]:
    """The whole report: what each system says, the lag per projection, and what needs attention."""
    report: dict[str, Any] = {"checked_at": datetime.now(UTC), "kafka": kafka_status(settings),
                              "postgres": postgres_status(settings), "outbox": outbox_status(),
                              # this installation's Avro decoding and validation: "compiled" (the C
                              # extensions) or "python"
                              "avro_reader": READER_KIND, "validation": VALIDATION_KIND}
    report["projections"] = {
        name: {**projection, "lag": lag(report["kafka"], projection)}
        for name, projection in report["postgres"].pop("projections", {}).items()}
    report["attention"] = attention(report, limits, report["checked_at"])
    return report
