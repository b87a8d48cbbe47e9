"""Waiting for a starting broker: until it answers, while it makes progress, within a limit.

Kept apart from `kafka.py`, which starts the process: the wait is also how other code asks
whether a broker answers at all (`kafka_available`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient

from assetlog.compose.processes import StackError

READY_TIMEOUT_SECONDS = 90.0  # without any sign of progress from the starting broker
START_LIMIT_SECONDS = 900.0  # in all, however busy the broker is
NOTE_AFTER_SECONDS = 20.0  # then `stack up` says why it is still waiting


def wait_until_kafka_ready(bootstrap: str, process: subprocess.Popen | None = None,
                           timeout: float = READY_TIMEOUT_SECONDS,
                           client_config: dict[str, str] | None = None,
                           progress: Callable[[], int] | None = None,
                           limit: float = START_LIMIT_SECONDS,
                           note: Callable[[float], None] | None = None) -> float:
    """Poll a metadata request until the broker answers; returns seconds waited.

    `timeout` counts from the last sign of progress. A broker holding thousands of partitions spends
    minutes loading them before it answers, writing its log all the while; a fixed 90 s killed such
    a start while it was going well. With `progress` (the size of the broker's log), the wait goes on
    while that grows, up to `limit` in all. `note` is called once, after NOTE_AFTER_SECONDS.
    """

    started = last_progress = time.monotonic()
    seen = progress() if progress else None
    noted = False
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "logger": _silent_logger(),
                         **(client_config or {})})
    while True:
        now = time.monotonic()
        stalled = now - last_progress >= timeout
        if stalled or now - started >= limit:
            break
        if process is not None and process.poll() is not None:
            raise StackError(f"Kafka exited during start-up (code {process.returncode}); see its log")
        try:
            metadata = admin.list_topics(timeout=1.0)
            if metadata.brokers:
                return time.monotonic() - started
        except Exception:  # any failure means "not ready yet"
            pass
        time.sleep(0.2)
        if progress is not None:
            current = progress()
            if current != seen:
                seen, last_progress = current, time.monotonic()
        if note is not None and not noted and time.monotonic() - started >= NOTE_AFTER_SECONDS:
            note(time.monotonic() - started)
            noted = True
    waited = time.monotonic() - started
    quiet = f", the last {timeout:.0f}s without progress" if stalled and waited > timeout + 1 else ""
    raise StackError(f"Kafka did not answer on {bootstrap} within {waited:.0f}s{quiet}")


def say_still_starting(partitions: int) -> Callable[[float], None]:
    def say(seconds: float) -> None:
        print(f"assetlog: Kafka is still starting after {seconds:.0f}s (it loads {partitions} partitions); "
              "waiting while it makes progress", file=sys.stderr, flush=True)
    return say


def _silent_logger():
    logger = logging.getLogger("assetlog.compose.kafka.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def kafka_available(bootstrap: str, timeout: float = 3.0, client_config: dict[str, str] | None = None) -> bool:
    try:
        wait_until_kafka_ready(bootstrap, timeout=timeout, client_config=client_config)
        return True
    except StackError:
        return False
