"""Fast recovery by default: a consumer SIGKILLed and restarted at once projects again within seconds.

Static group membership (consumers/membership.py) is the default: each
process claims a slot, and a restart in the same slot is recognised by the
broker as the same member. With the old dynamic membership the restarted
process waited for the dead member's session to expire (about 8-9 s after the
kill, `session.timeout.ms` 10 s); these tests fail on that behaviour.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from events_factory import TaskRun, events_of, publish

from assetlog.config import Settings
from assetlog.consumers.membership import claim_slot, instance_id
from assetlog.errors import ConfigError
from assetlog.projections import migrate

# Static membership recovers in about 0.7 s on a quiet machine, up to 4.5 s on a loaded one
# (bench/recovery_bench.py). The tests widen the gap to what they must catch by running with a
# 30 s session timeout: waiting for a dead member's session (the old dynamic membership, or a
# static member that does not leave on a clean stop) then takes 20-30 s, while nothing in the
# fast path depends on it. A 15 s bound is generous for a loaded 2-core box and still fails there.
RECOVERY_BOUND_SECONDS = 15.0
SLOW_SESSION = {"ASSETLOG_KAFKA_SESSION_TIMEOUT_MS": "30000"}


def consume(world, *extra: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "assetlog", "consume", "lineage", "--quiet", *extra],
                            env=world.env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def history_rows(dsn: str, keys: list[str]) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM lineage_history WHERE asset_key = ANY(%s)", (keys,)).fetchone()[0]


def first_row_after(world, keys: list[str], timeout: float) -> float | None:
    """Seconds until a row of `keys` is visible (publishing them first), or None after `timeout`."""
    started = time.monotonic()
    publish(world.settings, events_of([TaskRun([key]) for key in keys]))
    while time.monotonic() - started < timeout:
        if history_rows(world.dsn, keys):
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def wait_for_members(world, count: int, timeout: float = 60) -> None:
    """Until the lineage group is stable with `count` members, each holding partitions."""
    from confluent_kafka import ConsumerGroupState

    from assetlog.topics import admin_client

    admin = admin_client(world.settings)
    group = f"{world.settings.topic_prefix}.lineage"
    deadline = time.monotonic() + timeout
    while True:
        described = admin.describe_consumer_groups([group])[group].result()
        holding = [m for m in described.members if m.assignment and m.assignment.topic_partitions]
        if described.state == ConsumerGroupState.STABLE and len(holding) == count:
            return
        assert time.monotonic() < deadline, f"group {group}: {described.state}, {len(holding)} members holding"
        time.sleep(0.2)


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        process.kill()
    return process.communicate(timeout=30)


def test_a_sigkilled_consumer_restarted_at_once_projects_again_within_seconds(isolated, tmp_path):
    migrate(isolated.dsn)
    # Default membership settings; the slot folder is the test's own.
    slots = {"XDG_STATE_HOME": str(tmp_path / "state"), **SLOW_SESSION}
    process = consume(isolated, **slots)
    try:
        assert first_row_after(isolated, ["s3://r/warm.csv"], timeout=60) is not None, stop(process)[1]
        time.sleep(1.0)  # a steady member, heartbeating
        for round_number in range(2):
            killed_at = time.monotonic()
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process = consume(isolated, **slots)
            keys = [f"s3://r/{round_number}/{i}.csv" for i in range(3)]
            seen = first_row_after(isolated, keys, timeout=30)
            assert seen is not None, f"nothing projected after a restart: {stop(process)[1][-2000:]}"
            recovery = time.monotonic() - killed_at
            assert recovery < RECOVERY_BOUND_SECONDS, f"round {round_number}: first new row {recovery:.1f}s after the kill"
    finally:
        stop(process)


def test_a_member_stopped_for_good_hands_its_partitions_over_at_once(isolated, tmp_path):
    """Static members do not leave the group on close(); ours leave on SIGTERM (unsubscribe first),
    so scaling down does not stall a share of the partitions for the session timeout (10 s)."""
    migrate(isolated.dsn)
    slots = {"XDG_STATE_HOME": str(tmp_path / "state"), **SLOW_SESSION}
    processes = [consume(isolated, **slots) for _ in range(2)]
    try:
        wait_for_members(isolated, 2)  # both hold partitions: the stopped one has a share to hand over
        processes[0].send_signal(signal.SIGTERM)
        assert processes[0].wait(30) == 0
        stopped_at = time.monotonic()
        keys = [f"s3://s/after{i}.csv" for i in range(12)]  # on every partition, most likely
        publish(isolated.settings, events_of([TaskRun([key]) for key in keys]))
        while history_rows(isolated.dsn, keys) < len(keys):
            waited = time.monotonic() - stopped_at
            assert waited < RECOVERY_BOUND_SECONDS, f"only {history_rows(isolated.dsn, keys)} of 12 after {waited:.1f}s"
            time.sleep(0.05)
    finally:
        for process in processes:
            stop(process)


def test_two_processes_with_the_same_instance_id_fence_the_older_with_one_line(isolated, tmp_path):
    """Two hosts with the same name claim the same slot: simulated by two slot folders."""
    migrate(isolated.dsn)
    first = consume(isolated, "--slot", "0", XDG_STATE_HOME=str(tmp_path / "host-a"))
    try:
        assert first_row_after(isolated, ["s3://f/warm.csv"], timeout=60) is not None, stop(first)[1]
        second = consume(isolated, "--slot", "0", XDG_STATE_HOME=str(tmp_path / "host-b"))
        try:
            out, err = first.communicate(timeout=120)
            assert first.returncode == 1
            # Besides log lines (librdkafka logs the fatal error itself, from its own thread, before or
            # after ours; a loaded machine may add warnings), the process ends with one error line of
            # ours and no traceback.
            assert "Traceback" not in err
            ours = [line for line in err.strip().splitlines() if line.startswith("assetlog:")]
            assert len(ours) == 1, err
            last = ours[0]
            assert last.startswith(f"assetlog: fenced: another consumer joined group {isolated.settings.topic_prefix}"
                                   ".lineage with this process's group.instance.id")
            assert instance_id("lineage", 0) in last and "--slot" in last
            # The newcomer carries on with the partitions.
            assert first_row_after(isolated, ["s3://f/after.csv"], timeout=60) is not None, stop(second)[1]
            assert second.poll() is None
        finally:
            stop(second)
    finally:
        stop(first)


def test_a_slot_held_on_this_host_is_refused_at_start(isolated, tmp_path):
    migrate(isolated.dsn)
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    first = consume(isolated, "--slot", "3", **state)
    try:
        assert first_row_after(isolated, ["s3://h/warm.csv"], timeout=60) is not None, stop(first)[1]
        second = subprocess.run([sys.executable, "-m", "assetlog", "consume", "lineage", "--slot", "3"],
                                env=isolated.env(**state), capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"assetlog: consumer slot 3 of group {isolated.settings.topic_prefix}.lineage is held by process "
            f"{first.pid} on this host; give each process its own slot (--slot / ASSETLOG_CONSUMER_SLOT)")
        assert first.poll() is None
    finally:
        stop(first)


def test_slots_are_the_lowest_free_numbers_and_come_back_when_released(tmp_path):
    settings = Settings.from_env({"XDG_STATE_HOME": str(tmp_path)})
    assert settings.consumer_lock_dir == tmp_path / "assetlog" / "consumers"
    a = claim_slot(settings, "p.lineage", "lineage", host="h1")
    b = claim_slot(settings, "p.lineage", "lineage", host="h1")
    other_group = claim_slot(settings, "p.properties", "properties", host="h1")
    assert (a.number, b.number, other_group.number) == (0, 1, 0)
    assert (a.instance_id, b.instance_id) == ("lineage.h1.0", "lineage.h1.1")
    a.release()
    again = claim_slot(settings, "p.lineage", "lineage", host="h1")
    assert again.number == 0  # a restarted process gets the dead one's slot, hence its id
    explicit = Settings.from_env({"XDG_STATE_HOME": str(tmp_path), "ASSETLOG_CONSUMER_SLOT": "1"})
    with pytest.raises(ConfigError, match="slot 1 of group p.lineage is held by process"):
        claim_slot(explicit, "p.lineage", "lineage")
    assert claim_slot(Settings.from_env({"ASSETLOG_CONSUMER_SLOT": "none"}), "p.lineage", "lineage") is None
    for slot in (b, other_group, again):
        slot.release()


def test_instance_ids_are_valid_kafka_names_whatever_the_host_is_called():
    assert instance_id("lineage", 2, host="db 1.example.com/ü") == "lineage.db_1.example.com.2"
    assert len(instance_id("lineage", 9999, host="h" * 500)) < 249


@pytest.mark.parametrize("text", ["-1", "10000", "two", "1.5", "١"])
def test_bad_slots_are_refused_with_the_variable_named(text):
    with pytest.raises(ConfigError, match=r"ASSETLOG_CONSUMER_SLOT=.*expected a slot number 0\.\.9999"):
        Settings.from_env({"ASSETLOG_CONSUMER_SLOT": text})


def test_bad_slot_option_exits_2_with_one_line(isolated):
    result = subprocess.run([sys.executable, "-m", "assetlog", "consume", "lineage", "--slot", "-4"],
                            env=isolated.env(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--slot='-4': expected a slot number" in result.stderr.strip().splitlines()[-1]


def test_the_user_instance_id_wins_over_the_slot(tmp_path):
    from assetlog.consumers.membership import static_membership

    settings = Settings.from_env({"XDG_STATE_HOME": str(tmp_path), "ASSETLOG_KAFKA_GROUP_INSTANCE_ID": "mine",
                                 "ASSETLOG_KAFKA_BOOTSTRAP": "broker:9092"})
    config: dict[str, object] = {}
    assert static_membership(settings, "g", "lineage", config) is None
    assert config == {} and settings.kafka_client_config(defaults=config)["group.instance.id"] == "mine"
    assert not list(Path(tmp_path).rglob("*.lock"))


def test_the_kip848_protocol_is_refused_with_one_line(isolated):
    """Measured slower to recover and not what the runner's rebalance callbacks do (docs/consumers.md);
    before, it ended in a traceback ("Failed to set assignment: Local: Erroneous state")."""
    migrate(isolated.dsn)
    result = subprocess.run([sys.executable, "-m", "assetlog", "consume", "lineage"],
                            env=isolated.env(ASSETLOG_KAFKA_GROUP_PROTOCOL="consumer"), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "assetlog: ASSETLOG_KAFKA_GROUP_PROTOCOL=consumer: the consumers use the classic group protocol with "
        "static membership; unset it"]
