"""Static group membership by default, so a restarted consumer takes its partitions back at once.

With dynamic membership a SIGKILLed consumer stays in its group until its
session expires (`session.timeout.ms`, 10 s): a process restarted at once
waits that long before it is given any partition. With a stable
`group.instance.id` the broker recognises the restarted process as the same
member and hands it the dead one's partitions at once, without a rebalance.

The id must be stable across restarts yet unique among live processes, so it
is derived from a *slot*: `<projection>.<host>.<slot>`. A process claims the
lowest free slot number on its host with an exclusive lock on a small file
(`<lock dir>/<group>.<slot>.lock`); the kernel drops the lock when the process
dies however it dies, so the restarted process claims the same slot again.
An explicit slot (`assetlog consume --slot N` or `ASSETLOG_CONSUMER_SLOT=N`)
is refused at start when another process on this host holds it. Two hosts
with the same name (or two lock folders) can still claim the same id: then
the broker fences the older member, which stops with one line saying so.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, KafkaException

from assetlog.config import ENV_CONSUMER_SLOT, MAX_CONSUMER_SLOT, NO_CONSUMER_SLOT, Settings
from assetlog.errors import ConfigError

log = logging.getLogger("assetlog.consumers")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
LEAVE_SECONDS = 2.0  # longest wait for the revocation before leaving the group
_HOST_LENGTH = 64  # a group.instance.id has at most 249 characters


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._-") or "host"


def instance_id(projection: str, slot: int, host: str | None = None) -> str:
    """The `group.instance.id` of one process slot: `<projection>.<host>.<slot>`."""
    return f"{_safe(projection)}.{_safe(host or socket.gethostname())[:_HOST_LENGTH]}.{slot}"


@dataclass
class Slot:
    """A claimed slot: held until `release()` or the end of the process."""

    number: int
    instance_id: str
    path: Path
    _file: IO[str] | None

    def release(self) -> None:
        if self._file is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: no other process holds this inode
        except OSError:
            pass
        self._file.close()
        self._file = None


def _try_lock(path: Path) -> IO[str] | None:
    """An open, exclusively locked file at `path`, or None if another process holds it."""
    while True:
        handle = open(path, "a+", encoding="utf-8")  # kept open while the slot is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        try:
            same = os.fstat(handle.fileno()).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()  # its holder released it (and unlinked it) while we opened it: try the new file


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


def claim_slot(settings: Settings, group: str, projection: str, host: str | None = None) -> Slot | None:
    """Claim this process's slot in `group` per `settings.consumer_slot`; None for dynamic membership."""
    wanted = settings.consumer_slot
    if wanted == NO_CONSUMER_SLOT:
        return None
    folder = settings.consumer_lock_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the consumer slot folder {folder} ({exc.strerror}); set "
                          f"{ENV_CONSUMER_SLOT}=none to join without a slot") from exc
    numbers = [wanted] if isinstance(wanted, int) else range(MAX_CONSUMER_SLOT + 1)
    for number in numbers:
        path = folder / f"{_safe(group)}.{number}.lock"
        handle = _try_lock(path)
        if handle is not None:
            return Slot(number, instance_id(projection, number, host), path, handle)
        if isinstance(wanted, int):
            raise ConfigError(f"consumer slot {number} of group {group} is held by {_holder(path)} on this host; "
                              f"give each process its own slot (--slot / {ENV_CONSUMER_SLOT})")
    raise ConfigError(f"every consumer slot 0..{MAX_CONSUMER_SLOT} of group {group} is held on this host")


def static_membership(settings: Settings, group: str, projection: str,
                      config: dict[str, object]) -> Slot | None:
    """Claim a slot and put its `group.instance.id` into the consumer's `config` defaults.

    A user's own ASSETLOG_KAFKA_GROUP_INSTANCE_ID (a pass-through setting) wins: no slot then.
    The KIP-848 protocol (group.protocol=consumer) is refused with a ConfigError.
    """
    protocol = str(settings.kafka_settings.get("group.protocol", "classic")).lower()
    if protocol != "classic":
        # Measured slower to recover (docs/consumers.md), and its incremental assignment is not
        # what the runner's rebalance callbacks do: refuse it plainly rather than fail later.
        raise ConfigError(f"ASSETLOG_KAFKA_GROUP_PROTOCOL={protocol}: the consumers use the classic group "
                          "protocol with static membership; unset it")
    if "group.instance.id" in settings.kafka_settings:
        return None
    slot = claim_slot(settings, group, projection)
    if slot is not None:
        config["group.instance.id"] = slot.instance_id
        log.info("%s: static member %s (slot %d)", group, slot.instance_id, slot.number)
    return slot


def leave_group(consumer: Any) -> None:
    """Leave the group and close: the member's partitions move to the others at once.

    `close()` alone does not send LeaveGroup for a static member (the broker keeps its
    partitions for it until the session expires, for a restart to pick up); `unsubscribe()`
    first does. Measured: a stopped member's partitions were taken over after 13 s with
    `close()` alone, 3 s (the others' next heartbeat) with `unsubscribe()` first.
    """
    try:
        consumer.unsubscribe()
        # The leave is sent once the revocation is done, which happens while polling (the
        # on_revoke callback runs there); messages polled now are dropped, never committed.
        deadline = time.monotonic() + LEAVE_SECONDS
        while consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.05)
        consumer.poll(0.05)
    except Exception as exc:  # a fenced or failed consumer cannot leave; close() still frees it
        log.debug("leaving the group before close failed: %s", exc)
    consumer.close()


def is_fenced(exc: BaseException) -> bool:
    """True for the fatal error of a static member that another process replaced."""

    if not isinstance(exc, KafkaException) or not exc.args or not isinstance(exc.args[0], KafkaError):
        return False
    error = exc.args[0]
    if error.code() in (KafkaError._FENCED, KafkaError.FENCED_INSTANCE_ID):
        return True
    # librdkafka reports it as a generic fatal error whose text names the cause.
    return error.code() == KafkaError._FATAL and "fenced" in error.str().lower()
