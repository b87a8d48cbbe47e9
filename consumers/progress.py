"""Progress of a long run on stderr: a bar on a terminal, a plain line now and then elsewhere.

A replay of millions of events takes a while; people want to see it move
(events done, events/s, time left), and logs collected from a pipe want one
readable line every few seconds instead of carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts events against a total that may grow (later catch-up rounds add to it).

    `mode` is "bar" (redrawn in place, at most 10 times a second), "lines" (one
    line every `interval` seconds, none for a run shorter than that) or "off".
    `auto()` picks bar for a terminal.
    """

    def __init__(self, label: str, mode: str = "lines", stream: TextIO | None = None,
                 interval: float = 5.0, width: int = 30) -> None:
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode must be bar, lines or off, not {mode!r}")
        self.label = label
        self.mode = mode
        self.stream = stream or sys.stderr
        self.interval = interval if mode == "lines" else 0.1
        self.width = width
        self.total = 0
        self.done = 0
        self.phase = ""
        self._started = time.monotonic()
        self._shown = 0.0
        self._drawn = False

    @classmethod
    def auto(cls, label: str, quiet: bool = False, stream: TextIO | None = None) -> Progress:
        """A bar on a terminal; plain lines otherwise, unless `quiet` (e.g. --json output)."""
        stream = stream or sys.stderr
        if stream.isatty():
            return cls(label, "bar", stream)
        return cls(label, "off" if quiet else "lines", stream)

    def expect(self, more: int) -> None:
        self.total += max(0, more)
        self.show()

    def advance(self, events: int) -> None:
        self.done += events
        self.show()

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.show(force=True)

    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        share = self.done / self.total if self.total else 1.0
        parts = [self.label]
        if self.mode == "bar":
            filled = int(self.width * min(1.0, share))
            parts.append("[" + "#" * filled + "-" * (self.width - filled) + "]")
        parts += [f"{share:4.0%}", f"{self.done:,}/{self.total:,} events", f"{rate:,.0f} events/s",
                  f"{_duration(left)} left"]
        if self.phase:
            parts.append(self.phase)
        return "  ".join(parts)

    def show(self, force: bool = False) -> None:
        if self.mode == "off":
            return
        now = time.monotonic()
        if self.mode == "lines":
            # Nothing for a short run (its stderr stays for the outcome); then a line per interval,
            # phase changes and the end included once lines are flowing.
            last = self._shown or self._started
            if now - last < self.interval and not (force and self._shown):
                return
        elif not force and now - self._shown < self.interval:
            return
        self._shown = now
        if self.mode == "bar":
            self.stream.write("\r\x1b[2K" + self.line())
            self._drawn = True
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the bar's line."""
        if self.mode == "off":
            return
        self.show(force=True)
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
