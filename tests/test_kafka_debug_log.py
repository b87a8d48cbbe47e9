"""librdkafka's debug lines reach a consumer's own log when the user asks for them.

The clients keep librdkafka's log off stderr (its errors are told in one line each by
`AccessWatch`), which left nothing to read when a consumer stalled after a broker restart.
ASSETLOG_KAFKA_DEBUG (librdkafka's `debug` setting, e.g. `cgrp,fetch`) now sends its lines to
the process's log, at any log level.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from assetlog.projections import migrate


@pytest.fixture
def world(isolated):
    migrate(isolated.dsn)
    return isolated


def _consume(world, **env: str) -> subprocess.CompletedProcess[str]:
    # --quiet: the debug lines must come through even when only warnings are logged.
    command = [sys.executable, "-m", "assetlog", "consume", "lineage", "--until-caught-up", "--quiet", "--json"]
    done = subprocess.run(command, env=world.env(**env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["stopped_by"] == "caught-up"
    return done


def test_kafka_debug_contexts_reach_the_consumers_log(world):
    done = _consume(world, ASSETLOG_KAFKA_DEBUG="cgrp")
    # The group's state changes, named by librdkafka, e.g. `changed join state wait-sync -> steady`.
    assert "CGRPJOINSTATE" in done.stderr and "assetlog.kafka.debug" in done.stderr


def test_without_debug_contexts_the_log_stays_quiet(world):
    done = _consume(world)
    assert "assetlog.kafka.debug" not in done.stderr and "CGRPJOINSTATE" not in done.stderr
