"""compose/docker-compose.yml uses the variables, topics and commands the code uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from assetlog.cli import build_parser
from assetlog.config import ENV_KAFKA_BOOTSTRAP, ENV_POSTGRES_DSN, ENV_TOPIC_PREFIX, Settings

COMPOSE = Path(__file__).resolve().parents[1] / "compose" / "docker-compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_read_the_same_variables_as_the_code():
    services = _compose()["services"]
    for name in ("setup", "consume-properties", "consume-lineage"):
        env = services[name]["environment"]
        assert set(env) == {ENV_KAFKA_BOOTSTRAP, ENV_POSTGRES_DSN, ENV_TOPIC_PREFIX}
        settings = Settings.from_env({k: str(v) for k, v in env.items()})
        assert settings.topics.materializations == "assetlog.materializations"
        assert settings.kafka_bootstrap == "kafka:29092"


def test_services_run_commands_the_cli_has():
    parser = build_parser()
    services = _compose()["services"]
    commands = [services[name]["command"][-1] for name in ("setup", "consume-properties", "consume-lineage")]
    for command in commands:
        for part in command.split("&&"):
            words = part.replace("exec ", "").split()
            if words and words[0] == "assetlog":
                parser.parse_args(words[1:])  # exits (SystemExit) if the CLI lacks the command


def test_kafka_keeps_events_and_listens_where_the_env_points():
    kafka = _compose()["services"]["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_LOG_RETENTION_HOURS"] == -1
    assert "INTERNAL://kafka:29092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["image"].startswith("apache/kafka:4")


def test_prometheus_scrapes_the_consumers_metrics_ports():
    services = _compose()["services"]
    scrape = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for config in job["static_configs"] for t in config["targets"]}
    for name in ("consume-properties", "consume-lineage"):
        command = services[name]["command"][-1]
        port = command.split("--metrics-port")[1].split()[0]
        assert f"{name}:{port}" in targets
        assert "--metrics-host 0.0.0.0" in command  # reachable from the prometheus container


def test_dashboard_queries_name_metrics_that_exist():
    import json
    import re

    from assetlog.metrics import REGISTRY

    exported = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        exported |= {family.name + suffix for suffix in suffixes[family.type]}
    dashboard = json.loads((COMPOSE.parent / "grafana" / "assetlog-dashboard.json").read_text())
    named = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"\bassetlog_[a-z_]+", target["expr"])}
    assert named, "the dashboard queries no Assetlog metric"
    assert named <= exported, named - exported
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("lag", "throughput", "dead letters", "freshness"):
        assert topic in titles
