"""The foundation works on real servers: a message goes through the broker and a row through PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
from confluent_kafka import Consumer, Producer
from psycopg import sql

from assetlog.topics import (
    REQUIRED_TOPIC_CONFIG,
    TopicError,
    _describe_with_retry,
    admin_client,
    ensure_topics,
    verify_topic_settings,
)


def test_message_round_trips_through_the_real_broker(isolated):
    topic = isolated.settings.topics.materializations
    payload = uuid.uuid4().bytes
    producer = Producer(isolated.settings.kafka_client_config(required={"enable.idempotence": True, "acks": "all"}))
    producer.produce(topic, key=b"s3://bucket/smoke.csv", value=payload)
    assert producer.flush(30) == 0
    consumer = Consumer(isolated.settings.kafka_client_config(required={
        "group.id": f"smoke-{uuid.uuid4()}", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([topic])
    try:
        received = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                received = message
                break
    finally:
        consumer.close()
    assert received is not None, "nothing came back from the broker"
    assert received.value() == payload
    assert received.key() == b"s3://bucket/smoke.csv"


def test_row_round_trips_through_the_real_postgres(isolated):
    with psycopg.connect(isolated.dsn) as conn:
        conn.execute("CREATE TABLE smoke (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO smoke VALUES (%s, %s)", (1, "it's real"))
        conn.commit()
    with psycopg.connect(isolated.dsn) as conn:
        assert conn.execute("SELECT label FROM smoke WHERE id = %s", (1,)).fetchone() == ("it's real",)
        assert conn.execute("SELECT current_database()").fetchone()[0] == isolated.database


def test_event_topics_keep_every_event(isolated):
    admin = admin_client(isolated.settings)
    topic = isolated.settings.topics.dependencies
    from confluent_kafka.admin import ConfigResource, ResourceType

    # Just created: the broker may not know the topic for a moment yet; the product's own check retries too.
    resource, future = next(iter(admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).items()))
    configs = _describe_with_retry(admin, resource, future, timeout=10.0)
    for setting, value in REQUIRED_TOPIC_CONFIG.items():
        assert configs[setting].value == value
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3
    # A second run accepts what the first created.
    assert set(ensure_topics(isolated.settings).values()) == {"exists"}


def test_existing_topic_that_would_lose_events_is_refused(isolated):
    from confluent_kafka.admin import NewTopic

    admin = admin_client(isolated.settings)
    bad = f"{isolated.settings.topic_prefix}.compacted"
    admin.create_topics([NewTopic(bad, 1, -1, config={"cleanup.policy": "compact"})])[bad].result()
    try:
        verify_topic_settings(admin, [bad])
    except TopicError as exc:
        assert "cleanup.policy=compact" in str(exc)
    else:
        raise AssertionError("a compacted topic was accepted")
    finally:
        admin.delete_topics([bad])[bad].result()


def test_stack_status_and_env_name_the_running_servers(stack):
    result = subprocess.run([sys.executable, "-m", "assetlog", "stack", "status", "--json"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert '"reachable": true' in result.stdout


def test_missing_configuration_is_one_clear_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "assetlog", "topics", "create"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "ASSETLOG_KAFKA_BOOTSTRAP is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_scratch_prefix_is_deleted_whole_and_nothing_beside_it(isolated):
    """Tests and benchmarks make topics beside the six event topics; all of them must go, and only them.

    Deleting only the six leaked the rest: thousands of partitions, and a broker that took longer to
    start than `stack up` waits.
    """
    from dataclasses import replace

    from assetlog.topics import all_topics, delete_topics_under

    prefix = isolated.settings.topic_prefix
    nested = replace(isolated.settings, topic_prefix=f"{prefix}.late")
    sibling = replace(isolated.settings, topic_prefix=f"{prefix}x")  # shares the letters, not the prefix
    ensure_topics(nested, partitions=1)
    ensure_topics(sibling, partitions=1)
    try:
        # No wait here: ensure_topics returns once the broker lists what it made, which is what the
        # deletion below reads (this test once failed when it did not).
        deleted = delete_topics_under(isolated.settings)
        assert set(deleted) == {*all_topics(isolated.settings.topics), *all_topics(nested.topics)}
        # Deletion and creation reach the broker's metadata a moment after the futures complete.
        left = _topics_once(isolated.settings, lambda names: not [t for t in names if t.startswith(prefix + ".")])
        assert not [t for t in left if t.startswith(prefix + ".")]
        assert set(all_topics(sibling.topics)) <= _topics_once(
            isolated.settings, lambda names: set(all_topics(sibling.topics)) <= names)
    finally:
        delete_topics_under(sibling)


def test_topics_of_test_runs_that_ended_without_clean_up_are_swept(stack, isolated):
    """A killed run's topics go (its database is gone); a running test's stay (its database exists)."""
    from dataclasses import replace

    from conftest import sweep_orphan_test_topics

    from assetlog.topics import all_topics, delete_topics_under, list_topic_names

    orphan = replace(isolated.settings, topic_prefix=f"test.{uuid.uuid4().hex[:10]}")
    ensure_topics(orphan, partitions=1)
    try:
        _topics_once(orphan, lambda names: set(all_topics(orphan.topics)) <= names)
        swept = sweep_orphan_test_topics(stack)
        assert set(all_topics(orphan.topics)) <= set(swept)
        assert not set(all_topics(isolated.settings.topics)) & set(swept)
        _, left = list_topic_names(isolated.settings)
        assert set(all_topics(isolated.settings.topics)) <= left
    finally:
        delete_topics_under(orphan)


def _topics_once(settings, done, timeout: float = 30.0) -> set[str]:
    """The broker's topic names once `done(names)` holds (or the last names seen, after `timeout`)."""
    import time

    from assetlog.topics import list_topic_names

    deadline = time.monotonic() + timeout
    while True:
        _, names = list_topic_names(settings)
        if done(names) or time.monotonic() >= deadline:
            return names
        time.sleep(0.2)


def test_a_killed_runs_database_is_dropped_and_one_in_use_or_too_young_is_kept(stack):
    """The session's sweep drops test databases nobody is connected to once they are older than any
    test run (their topics then go with `sweep_orphan_test_topics`)."""
    from dataclasses import replace

    from conftest import dsn_as_role, dsn_for_database, sweep_orphan_test_databases

    names = [f"assetlog_test_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    orphan, busy = names
    plain_role = f"assetlog_test_sweeper_{orphan[-10:]}"
    with psycopg.connect(stack.admin_dsn, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(plain_role)))
        try:
            assert sweep_orphan_test_databases(stack, only=names) == []  # both younger than a test run
            as_plain_role = replace(stack, admin_dsn=dsn_as_role(stack.admin_dsn, plain_role))
            # No superuser: it may not read the databases' age, so it sweeps nothing rather than fail.
            assert sweep_orphan_test_databases(as_plain_role, older_than="0 seconds", only=names) == []
            with psycopg.connect(dsn_for_database(stack.admin_dsn, busy)):
                assert sweep_orphan_test_databases(stack, older_than="0 seconds", only=names) == [orphan]
            left = {row[0] for row in admin.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                                                    (names,))}
            assert left == {busy}
        finally:
            for name in names:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(plain_role)))
