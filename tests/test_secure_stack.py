"""Every component over SASL_SSL and TLS with passwords, on the secure local stack.

`assetlog stack up --secure` starts a private broker whose only client
listener is SASL_SSL (SCRAM-SHA-512 users made by Kafka's own storage tool)
and a PostgreSQL that accepts only TLS connections with scram-sha-256
passwords. The producer, both consumers, replay, the query CLI and the web
view run against it with nothing but the variables `stack env --secure`
prints; wrong credentials and an untrusted certificate each fail in one line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from assetlog.compose.security import make_certificate_authority

pytestmark = pytest.mark.timeout(600)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSETLOG_")}
    env.update(extra)
    return env


def _assetlog(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def secure() -> Iterator[dict[str, str]]:
    """The secure stack's variables (in a folder of this module's own), torn down afterwards."""
    home = Path(tempfile.mkdtemp(prefix="assetlog-secure-", dir="/tmp"))
    home.chmod(0o755)  # the postgres user must reach the cluster's folder
    stack_env = _clean_env(ASSETLOG_STACK_DIR=str(home / "stack"))
    try:
        up = _assetlog(stack_env, "stack", "up", "--secure", "--json", timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        env_result = _assetlog(stack_env, "stack", "env", "--secure", "--json")
        assert env_result.returncode == 0, env_result.stderr
        variables = json.loads(env_result.stdout)
        outbox = home / "outbox"
        yield _clean_env(**variables, ASSETLOG_OUTBOX_DIR=str(outbox), ASSETLOG_STACK_DIR=str(home / "stack"))
    finally:
        _assetlog(stack_env, "stack", "down", "--secure", "--purge", timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def test_secure_stack_accepts_only_authenticated_encrypted_clients(secure: dict[str, str]) -> None:
    assert secure["ASSETLOG_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert secure["ASSETLOG_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    # A plaintext Kafka client gets no metadata from the only listener there is.
    plaintext = AdminClient({"bootstrap.servers": secure["ASSETLOG_KAFKA_BOOTSTRAP"], "log_level": 0})
    with pytest.raises(KafkaException):
        plaintext.list_topics(timeout=3)
    # PostgreSQL refuses a connection without TLS, even with the right password.
    for name in ("ASSETLOG_POSTGRES_DSN", "ASSETLOG_POSTGRES_READONLY_DSN"):
        dsn = secure[name]
        assert "sslmode=verify-full" in dsn
        with pytest.raises(psycopg.OperationalError, match="no encryption"):
            psycopg.connect(dsn.replace("sslmode=verify-full", "sslmode=disable"), connect_timeout=5)
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)


def test_every_component_runs_over_sasl_ssl_and_tls(secure: dict[str, str]) -> None:
    env = {**secure, "ASSETLOG_TOPIC_PREFIX": "secure.e2e"}
    # Producer (the guide's six pipelines), topics, migration, both consumers and the query API, in one go.
    demo = _assetlog(env, "demo", "--json")
    assert demo.returncode == 0, demo.stderr[-2000:]
    result = json.loads(demo.stdout)
    keys = {asset["key"] for asset in result["assets"]}
    assert "s3://my-bucket/downstream.csv" in keys and len(keys) == 13
    # Replay audits the live tables from the topics over the same connections.
    check = _assetlog(env, "replay", "all", "--check", "--json")
    assert check.returncode == 0, check.stderr[-2000:]
    # The query CLI, through the read-only role's password and TLS.
    lineage = _assetlog(env, "lineage", "s3://my-bucket/downstream.csv", "--format", "json")
    assert lineage.returncode == 0, lineage.stderr
    nodes = {node["key"] for node in json.loads(lineage.stdout)["nodes"]}
    assert {"s3://my-bucket/upstream.csv", "s3://my-bucket/config.json"} <= nodes
    # The web view, on the read-only DSN, with a token made over the writer's TLS connection.
    made = _assetlog(env, "tokens", "create", "secure e2e", "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    server = subprocess.Popen([sys.executable, "-m", "assetlog", "serve", "--port", "0"], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", first)
        assert found, first
        request = urllib.request.Request(found.group(1) + "api/assets?search=downstream",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            listed = {asset["key"] for asset in json.load(answer)["assets"]}
        assert "s3://my-bucket/downstream.csv" in listed
    finally:
        server.terminate()
        server.wait(timeout=30)


def _one_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("assetlog: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_wrong_kafka_password_and_untrusted_broker_certificate_are_one_line_each(
        secure: dict[str, str], tmp_path: Path) -> None:
    wrong_password = _assetlog({**secure, "ASSETLOG_KAFKA_SASL_PASSWORD": "not-the-password"},
                               "topics", "create", timeout=60)
    _one_line(wrong_password, "refused the credentials of user assetlog", "ASSETLOG_KAFKA_SASL_PASSWORD")
    other_ca, _ = make_certificate_authority(tmp_path / "other-ca", "Some other CA")
    untrusted = _assetlog({**secure, "ASSETLOG_KAFKA_SSL_CA_LOCATION": str(other_ca)}, "topics", "create",
                          timeout=60)
    _one_line(untrusted, "TLS with Kafka", "could not be verified", "ASSETLOG_KAFKA_SSL_CA_LOCATION")


def test_a_producer_with_a_wrong_kafka_password_or_an_untrusted_certificate_says_so_in_one_line(
        secure: dict[str, str], tmp_path: Path) -> None:
    """Not "Kafka is unreachable": the publisher refuses to start, naming the setting to check."""
    wrong_password = _assetlog({**secure, "ASSETLOG_KAFKA_SASL_PASSWORD": "not-the-password",
                                "ASSETLOG_OUTBOX_DIR": str(tmp_path / "outbox-password")}, "outbox", "flush",
                               timeout=60)
    _one_line(wrong_password, "refused the credentials", "ASSETLOG_KAFKA_SASL_PASSWORD")
    other_ca, _ = make_certificate_authority(tmp_path / "other-ca", "Some other CA")
    untrusted = _assetlog({**secure, "ASSETLOG_KAFKA_SSL_CA_LOCATION": str(other_ca),
                           "ASSETLOG_OUTBOX_DIR": str(tmp_path / "outbox-ca")}, "outbox", "flush", timeout=60)
    _one_line(untrusted, "TLS with Kafka", "could not be verified", "ASSETLOG_KAFKA_SSL_CA_LOCATION")


def test_wrong_postgres_password_and_untrusted_server_certificate_are_one_line_each(
        secure: dict[str, str], tmp_path: Path) -> None:
    reader = secure["ASSETLOG_POSTGRES_READONLY_DSN"]
    password = re.search(r"assetlog_reader:([^@]+)@", reader)
    assert password
    wrong = _assetlog({**secure, "ASSETLOG_POSTGRES_READONLY_DSN": reader.replace(password.group(1), "wrong")},
                      "assets", timeout=60)
    _one_line(wrong, "password authentication failed", "assetlog_reader")
    other_ca, _ = make_certificate_authority(tmp_path / "other-ca", "Some other CA")
    ca = re.search(r"sslrootcert=([^&]+)", reader)
    assert ca
    untrusted = _assetlog({**secure, "ASSETLOG_POSTGRES_READONLY_DSN": reader.replace(ca.group(1), str(other_ca))},
                          "assets", timeout=60)
    _one_line(untrusted, "certificate verify failed")


@pytest.mark.parametrize("command", [("consume", "lineage", "--until-caught-up", "--quiet"),
                                     ("replay", "all", "--check")], ids=["consume", "replay"])
def test_consumers_fail_at_once_in_one_line_on_a_wrong_password_or_an_untrusted_broker(
        secure: dict[str, str], tmp_path: Path, command: tuple[str, ...]) -> None:
    # The group member used to wait out its 30 s metadata timeout, print librdkafka's log lines, and end
    # with "Kafka error: ... Broker transport failure"; it must now fail within seconds with the reason.
    env = secure  # the topics `stack up` created
    started = time.monotonic()
    wrong_password = _assetlog({**env, "ASSETLOG_KAFKA_SASL_PASSWORD": "not-the-password"}, *command, timeout=60)
    _one_line(wrong_password, "refused the credentials of user assetlog", "ASSETLOG_KAFKA_SASL_PASSWORD")
    other_ca, _ = make_certificate_authority(tmp_path / "other-ca", "Some other CA")
    untrusted = _assetlog({**env, "ASSETLOG_KAFKA_SSL_CA_LOCATION": str(other_ca)}, *command, timeout=60)
    _one_line(untrusted, "TLS with Kafka", "could not be verified", "ASSETLOG_KAFKA_SSL_CA_LOCATION")
    assert time.monotonic() - started < 25, "both failures must be told at once, not after a timeout"
