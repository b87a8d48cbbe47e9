"""CPU seconds of this process and of PostgreSQL backends, to show where a benchmark's time goes.

A throughput figure alone does not say which side is the bottleneck. These
helpers read the kernel's counters (`/proc/<pid>/stat`, utime + stime) of the
PostgreSQL backends serving a benchmark, so the benchmarks can report CPU
seconds per 1M events of the consumer process and of PostgreSQL side by side.
They need PostgreSQL on the same machine (the local stack); elsewhere the
backend figures are None.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg

_TICKS = os.sysconf("SC_CLK_TCK")


def pid_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), or None when it is not visible here."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of stat(5)


def pid_oncpu_seconds(pid: int) -> float | None:
    """Time a process has run on a CPU, in nanoseconds' precision (`/proc/<pid>/schedstat`), or None.

    utime + stime advance by clock ticks (10 ms here): fine over a run, too coarse to tell one
    statement of a batch from the next."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as stat:
            return int(stat.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def backend_pid(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]


class BackendSampler:
    """Samples, every `interval` s, the CPU of the backends of `database` whose application_name
    starts with `application`; `seconds` is their total (each backend's last reading) when stopped.

    A backend's counters die with it, so the last reading before it exits is kept: at most one
    interval of its work is missed (a few ms at the default interval).
    """

    def __init__(self, dsn: str, database: str, application: str, interval: float = 0.02) -> None:
        self._dsn, self._database, self._application_prefix, self._interval = dsn, database, application, interval
        self._last: dict[int, float] = {}
        self._application: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-cpu", daemon=True)

    def __enter__(self) -> BackendSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float | None:
        return sum(self._last.values()) if self._last else None

    @property
    def by_application(self) -> dict[str, float]:
        """The same seconds by application_name (e.g. a replay's writers, index builds, control)."""
        totals: dict[str, float] = {}
        for pid, seconds in self._last.items():
            name = self._application.get(pid, "?")
            totals[name] = totals.get(name, 0.0) + seconds
        return totals

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            pids: list[int] = []
            next_lookup = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_lookup:  # new backends appear rarely: look them up every 0.2 s
                    found = conn.execute(
                        "SELECT pid, application_name FROM pg_stat_activity WHERE datname = %s "
                        "AND application_name LIKE %s", (self._database, self._application_prefix + "%")).fetchall()
                    pids = [pid for pid, _name in found]
                    self._application.update(found)
                    next_lookup = now + 0.2
                for pid in pids:
                    seconds = pid_cpu_seconds(pid)
                    if seconds is not None:
                        self._last[pid] = seconds
                self._stop.wait(self._interval)
