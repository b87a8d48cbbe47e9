"""Topics that keep everything: what replay relies on. `assetlog topics create` refuses lossy topics."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from assetlog.config import ENV_TOPIC_PREFIX
from assetlog.kafka_access import AccessWatch
from assetlog.topics import (
    REQUIRED_TOPIC_CONFIG,
    TopicError,
    admin_client,
    all_topics,
    delete_topic_names,
    wait_until_listed,
)


def topics_create(isolated, prefix: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assetlog", "topics", "create", *args],
                          env=isolated.env(**{ENV_TOPIC_PREFIX: prefix}), capture_output=True, text=True,
                          timeout=120)


def delete_all(isolated, prefix: str) -> None:
    settings = replace(isolated.settings, topic_prefix=prefix)
    # The client is kept until its futures are answered: freed while a deletion is in flight, it never
    # answers, and result() waited forever (a suite run hung here).
    admin = admin_client(settings)
    delete_topic_names(admin, all_topics(settings.topics))  # some were never created


def test_topics_are_created_with_the_chosen_partitions_and_unlimited_retention(isolated):
    prefix = f"{isolated.settings.topic_prefix}.fresh"
    try:
        done = topics_create(isolated, prefix, "--partitions", "5", "--json")
        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
        settings = replace(isolated.settings, topic_prefix=prefix)
        assert created == {topic: "created" for topic in all_topics(settings.topics)}
        admin = admin_client(settings)
        for topic in all_topics(settings.topics):
            assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 5
            config = next(iter(admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values())).result()
            assert {k: config[k].value for k in REQUIRED_TOPIC_CONFIG} == {
                "cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
        again = topics_create(isolated, prefix, "--json")
        assert again.returncode == 0 and set(json.loads(again.stdout).values()) == {"exists"}
    finally:
        delete_all(isolated, prefix)


class _LaggingMetadata:
    """An admin client whose metadata learns of new topics only at its `lists`-th listing (a fake: a real
    broker lags like this only now and then, under load, and cannot be made to on demand)."""

    def __init__(self, topics: list[str], partitions: int, lists: int) -> None:
        self.topics, self.partitions, self.lists, self.calls = topics, partitions, lists, 0

    def list_topics(self, timeout: float):
        from types import SimpleNamespace

        self.calls += 1
        known = self.calls >= self.lists
        return SimpleNamespace(topics={t: SimpleNamespace(error=None, partitions=dict.fromkeys(range(self.partitions)))
                                       for t in self.topics if known})


def test_creating_topics_returns_once_the_broker_lists_them():
    admin = _LaggingMetadata(["p.materializations", "p.metadata"], partitions=5, lists=3)
    wait_until_listed(AccessWatch("lagging:9092"), admin, admin.topics, 5, timeout=10)
    assert admin.calls == 3


def test_topics_the_broker_never_lists_are_named_in_one_line():
    admin = _LaggingMetadata(["p.materializations"], partitions=5, lists=10**9)
    with pytest.raises(TopicError, match=r"^created p\.materializations, but the broker does not list it with 5 "
                                         r"partition\(s\) after 0s$"):
        wait_until_listed(AccessWatch("lagging:9092"), admin, admin.topics, 5, timeout=0.2)


@pytest.mark.parametrize(("setting", "value"), [
    ("retention.ms", "604800000"),  # Kafka's default: a week, then events are gone
    ("retention.bytes", "1073741824"),
    ("cleanup.policy", "compact,delete"),
])
def test_an_existing_topic_that_would_lose_events_is_refused_naming_the_setting(isolated, setting, value):
    prefix = f"{isolated.settings.topic_prefix}.lossy"
    settings = replace(isolated.settings, topic_prefix=prefix)
    topic = settings.topics.dependencies
    admin = admin_client(settings)
    admin.create_topics([NewTopic(topic, 3, -1, config={setting: value})])[topic].result()
    try:
        refused = topics_create(isolated, prefix)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"assetlog: topic {topic} has {setting}={value}, which would lose events (Assetlog needs "
            f"{setting}={REQUIRED_TOPIC_CONFIG[setting]}); fix it with kafka-configs --alter --entity-type topics "
            f"--entity-name {topic} --add-config {setting}={REQUIRED_TOPIC_CONFIG[setting]}"]
    finally:
        delete_all(isolated, prefix)
