"""Configuration comes from the environment, with librdkafka settings passed through."""

from __future__ import annotations

import pytest

from assetlog.config import ConfigError, Settings, Topics


def test_topic_names_follow_the_prefix():
    topics = Settings.from_env({"ASSETLOG_TOPIC_PREFIX": "acme"}).topics
    assert topics.events == ("acme.materializations", "acme.dependencies", "acme.metadata")
    assert Topics.dead_letter(topics.metadata) == "acme.metadata.dlq"
    assert Settings.from_env({}).topic_prefix == "assetlog"


def test_kafka_security_settings_pass_through_from_the_environment(tmp_path):
    config_file = tmp_path / "client.properties"
    config_file.write_text("# SASL over TLS\nsasl.mechanism=SCRAM-SHA-512\nssl.ca.location = /etc/ca.pem\n")
    settings = Settings.from_env({
        "ASSETLOG_KAFKA_BOOTSTRAP": "broker:9093",
        "ASSETLOG_KAFKA_CONFIG_FILE": str(config_file),
        "ASSETLOG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ASSETLOG_KAFKA_SASL_USERNAME": "alice",
    })
    config = settings.kafka_client_config(defaults={"linger.ms": 5, "security.protocol": "PLAINTEXT"},
                                          required={"enable.auto.commit": False})
    assert config["bootstrap.servers"] == "broker:9093"
    assert config["security.protocol"] == "SASL_SSL"  # the user's setting beats a default
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["ssl.ca.location"] == "/etc/ca.pem"
    assert config["sasl.username"] == "alice"
    assert config["enable.auto.commit"] is False
    assert "config.file" not in config


def test_bad_prefix_and_missing_servers_are_named():
    with pytest.raises(ConfigError, match="ASSETLOG_TOPIC_PREFIX"):
        Settings.from_env({"ASSETLOG_TOPIC_PREFIX": "no spaces"})
    with pytest.raises(ConfigError, match="ASSETLOG_POSTGRES_DSN is not set"):
        Settings.from_env({}).require_postgres()


def test_the_outbox_commit_window_is_read_in_milliseconds():
    assert Settings.from_env({}).outbox_commit_window == 0.02
    assert Settings.from_env({"ASSETLOG_OUTBOX_COMMIT_WINDOW_MS": "0"}).outbox_commit_window == 0.0
    assert Settings.from_env({"ASSETLOG_OUTBOX_COMMIT_WINDOW_MS": "2.5"}).outbox_commit_window == 0.0025
    for bad in ("-1", "soon", "nan", "1001"):
        with pytest.raises(ConfigError, match=r"ASSETLOG_OUTBOX_COMMIT_WINDOW_MS=.*milliseconds from 0 to 1000"):
            Settings.from_env({"ASSETLOG_OUTBOX_COMMIT_WINDOW_MS": bad})
