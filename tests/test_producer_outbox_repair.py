"""A damaged, unwritable or poisoned outbox: one clear line naming the path, and a way out
(salvage, dead-letter) that keeps every readable event; status tells a dead publisher from a live one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from outbox_support import small_disk
from producer_support import read_published

from assetlog.producer import add_asset_metadata, flow, materialize, publishing
from assetlog.producer.outbox import Outbox, outbox_path, unpack_messages
from assetlog.producer.recording_errors import EventTooLarge, OutboxUnavailable


@materialize("s3://repair/out")
def build(n: int) -> int:
    add_asset_metadata("s3://repair/out", {"n": n})
    return n


@flow
def two_runs() -> None:
    build(1)
    build(2)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def written_outbox(directory, rows: int = 40) -> list[tuple[bytes, bytes]]:
    """An outbox of `rows` rows of 50 messages each (about 4 KiB per row), all in the main file."""
    outbox = Outbox(directory)
    messages = []
    try:
        for r in range(rows):
            batch = [(f"s3://k/{r}/{i}".encode(), bytes([r % 256]) * 80) for i in range(50)]
            outbox.append([("test.topic", batch)], None)
            messages.extend(batch)
        outbox.checkpoint()
    finally:
        outbox.close()
    return messages


def test_a_truncated_outbox_is_named_in_one_line_and_salvage_keeps_every_readable_event(isolated):
    directory = isolated.settings.outbox_dir
    originals = set(written_outbox(directory, rows=400))
    path = outbox_path(directory)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size * 2 // 3)
    env = isolated.env()

    line = one_line(cli("outbox", "status", env=env))
    assert str(path) in line and "damaged" in line and "assetlog outbox salvage" in line
    line = one_line(cli("outbox", "flush", "--timeout", "2", env=env))
    assert str(path) in line and "damaged" in line
    started = time.monotonic()
    with pytest.raises(OutboxUnavailable, match="damaged") as refused, publishing(isolated.settings):
        two_runs()
    assert str(path) in str(refused.value) and time.monotonic() - started < 5

    salvaged = cli("outbox", "salvage", "--json", env=env)
    assert salvaged.returncode == 0, salvaged.stderr
    report = json.loads(salvaged.stdout)
    assert report["damaged"] and 0 < report["rows_kept"] < 400 and report["rows_lost"] >= 1
    aside = report["set_aside"]
    assert aside and aside.startswith(str(path) + ".damaged-")
    with open(aside, "rb") as handle:
        assert len(handle.read()) == size * 2 // 3  # set aside as it was, never deleted
    outbox = Outbox(directory)
    try:
        kept = [m for (payload,) in outbox.conn.execute("SELECT payload FROM outbox") for m in unpack_messages(payload)]
    finally:
        outbox.close()
    assert len(kept) == report["events_kept"] == 50 * report["rows_kept"]
    assert set(kept) <= originals and len(set(kept)) == len(kept)
    assert json.loads(cli("outbox", "status", "--json", env=env).stdout)["events"] == len(kept)


def test_a_file_that_is_not_a_database_is_set_aside_and_flows_run_again(isolated):
    directory = isolated.settings.outbox_dir
    directory.mkdir(parents=True)
    path = outbox_path(directory)
    path.write_bytes(b"this is not an SQLite file" * 100)
    env = isolated.env()
    line = one_line(cli("outbox", "status", env=env))
    assert str(path) in line and "damaged" in line
    with pytest.raises(OutboxUnavailable, match="salvage"), publishing(isolated.settings):
        two_runs()
    report = json.loads(cli("outbox", "salvage", "--json", env=env).stdout)
    assert report["damaged"] and report["rows_kept"] == 0
    with publishing(isolated.settings):
        two_runs()
    assert len(read_published(isolated.settings, at_least=4)) == 4


def test_a_read_only_outbox_fails_the_run_at_once_naming_the_path(isolated, tmp_path):
    with small_disk(tmp_path / "ro") as disk:
        settings = replace(isolated.settings, outbox_dir=disk.mount / "outbox")
        Outbox(settings.outbox_dir).close()
        disk.read_only()
        started = time.monotonic()
        with pytest.raises(OutboxUnavailable) as refused, publishing(settings):
            two_runs()
        assert time.monotonic() - started < 5  # waiting cannot fix permissions: no block
        assert str(settings.outbox_dir) in str(refused.value) and "writable" in str(refused.value)
        status = cli("outbox", "status", "--json", env=isolated.env(ASSETLOG_OUTBOX_DIR=str(settings.outbox_dir)))
        assert status.returncode == 0, status.stderr


def test_status_tells_a_publisher_that_is_gone_from_a_running_one(isolated):
    dead = subprocess.Popen(["true"])
    dead.wait()
    outbox = Outbox(isolated.settings.outbox_dir)
    try:
        outbox.register("ghost")
        outbox.conn.execute("UPDATE publishers SET pid = ? WHERE owner = 'ghost'", (dead.pid,))
        outbox.append([(isolated.settings.topics.materializations, [(b"k", b"v")])], "ghost")
    finally:
        outbox.close()
    env = isolated.env()
    status = json.loads(cli("outbox", "status", "--json", env=env).stdout)
    assert [p["alive"] for p in status["publishers"]] == [False]
    human = cli("outbox", "status", env=env).stdout
    assert "gone" in human and f"pid {dead.pid}" in human and "running publisher" not in human


def test_metadata_over_the_kafka_limit_is_refused_at_add_asset_metadata_naming_asset_size_and_limit(isolated):
    @materialize("s3://repair/huge")
    def huge() -> None:
        add_asset_metadata("s3://repair/huge", {"blob": "x" * 2_000_000})

    with pytest.raises(EventTooLarge) as refused, publishing(isolated.settings):
        huge()
    message = str(refused.value)
    assert "s3://repair/huge" in message and "2,000,0" in message and "message.max.bytes=1000000" in message
    assert any(entry.name == "huge" for entry in refused.traceback)  # raised in the body, at the call


def test_a_topics_max_message_bytes_is_read_at_start_and_a_run_over_it_fails_at_task_end(isolated):
    from confluent_kafka.admin import NewTopic

    from assetlog.topics import REQUIRED_TOPIC_CONFIG, admin_client, all_topics

    small = replace(isolated.settings, topic_prefix=isolated.settings.topic_prefix + ".small")
    admin = admin_client(small)
    config = {**REQUIRED_TOPIC_CONFIG, "max.message.bytes": "20000"}
    for future in admin.create_topics([NewTopic(t, 1, 1, config=config) for t in all_topics(small.topics)]).values():
        future.result()
    many = [f"s3://repair/upstream/{i:05d}" for i in range(2000)]  # about 60 KB of upstream keys

    @materialize("s3://repair/wide", asset_deps=many)
    def wide() -> None:
        return None

    try:
        with pytest.raises(EventTooLarge) as refused, publishing(small):
            wide()
        message = str(refused.value)
        assert "s3://repair/wide" in message and "max.message.bytes=20000" in message
        with publishing(small):
            @flow
            def fine() -> None:
                add_ok()
            fine()
    finally:
        admin.delete_topics(all_topics(small.topics), operation_timeout=30)


@materialize("s3://repair/ok")
def add_ok() -> None:
    add_asset_metadata("s3://repair/ok", {"size": "small"})


def test_an_undeliverable_row_is_set_aside_never_waited_for_and_moved_out_by_dead_letter(isolated):
    # A row an older Assetlog wrote before sizes were checked: 2 MB, more than the broker takes.
    outbox = Outbox(isolated.settings.outbox_dir)
    try:
        outbox.append([(isolated.settings.topics.metadata, [(b"s3://old/huge", b"x" * 2_000_000)])], None)
    finally:
        outbox.close()
    with publishing(isolated.settings) as publisher:
        started = time.monotonic()
        two_runs()
        assert time.monotonic() - started < 5
        result = publisher.flush()
        assert result.complete, result  # the later runs never wait for the poison row
    env = isolated.env()
    status = json.loads(cli("outbox", "status", "--json", env=env).stdout)
    assert status["events"] == 0 and [r["events"] for r in status["undeliverable"]] == [1]
    assert "MSG_SIZE_TOO_LARGE" in status["undeliverable"][0]["error"]
    assert "dead-letter --undeliverable" in cli("outbox", "status", env=env).stdout
    line = one_line(cli("outbox", "flush", "--timeout", "3", env=env))
    assert "can never be delivered" in line and "the next publisher" not in line

    moved = cli("outbox", "dead-letter", "--undeliverable", "--json", env=env)
    assert moved.returncode == 0, moved.stderr
    assert [r["events"] for r in json.loads(moved.stdout)["moved"]] == [1]
    listed = json.loads(cli("outbox", "dead-letter", "--list", "--json", env=env).stdout)["dead_letters"]
    assert [(r["topic"], r["events"]) for r in listed] == [(isolated.settings.topics.metadata, 1)]
    flushed = cli("outbox", "flush", "--json", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert len(read_published(isolated.settings, at_least=4)) == 4
    missing = cli("outbox", "dead-letter", "999", env=env)
    assert "no row 999" in one_line(missing)
