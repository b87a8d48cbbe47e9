"""Process and port helpers for the local stack: pid files, free ports, clean stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from assetlog.errors import AssetlogError


class StackError(AssetlogError):
    """The local stack could not be started, stopped or found; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, wait_seconds: float = 0.0) -> bool:
    """Whether 127.0.0.1:`port` can be bound, waiting up to `wait_seconds` for it to become so: a
    server stopped a moment ago (`stack down` then `up`) can hold its ports for a few seconds more."""
    deadline = time.monotonic() + wait_seconds
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                if time.monotonic() >= deadline:
                    return False
            else:
                return True
        time.sleep(0.2)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, cmdline_marker: str | None = None) -> bool:
    """True if `pid` runs and (when given) its command line contains the marker.

    The marker guards against a recycled pid: a stale pid file must never make
    us report, or stop, somebody else's process.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if cmdline_marker is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if Path(f"/proc/{pid}/stat").exists():
        with contextlib.suppress(OSError, IndexError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                return False
    return cmdline_marker in cmdline


def stop_process_group(pid: int, grace_seconds: float = 20.0) -> None:
    """SIGTERM the process group `pid` leads, then SIGKILL after the grace period."""
    sig = signal.SIGTERM if grace_seconds > 0 else signal.SIGKILL
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and process_alive(pid, ""):
        _reap(pid)
        time.sleep(0.1)
    if process_alive(pid, ""):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        for _ in range(50):
            _reap(pid)
            if not process_alive(pid, ""):
                break
            time.sleep(0.1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(text: str, lines: int) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
