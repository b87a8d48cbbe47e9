"""A small file system to fill for real (tmpfs), and per-run accounting of what a flow recorded.

Filling a real file system is the only honest way to get SQLite's "database or
disk is full": a tmpfs of a few MiB is mounted for the test (root, or
CAP_SYS_ADMIN, which CI has); where mounting is impossible the test is skipped
saying so.
"""

from __future__ import annotations

import errno
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SmallDisk:
    """A mounted tmpfs; `fill()` takes every free byte with one file, `make_room()` removes it."""

    mount: Path

    @property
    def filler(self) -> Path:
        return self.mount / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as handle:
            chunk = b"\0" * 65536
            while True:
                try:
                    handle.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
            for size in (4096, 512, 1):  # the last few bytes too
                with suppress(OSError):
                    while True:
                        handle.write(b"\0" * size)

    def make_room(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.mount)], check=True, capture_output=True)


@contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[SmallDisk]:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill for real (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield SmallDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
