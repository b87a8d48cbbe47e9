"""The outbox's health as task runs see it: pass, wait for room, or fail.

The writer thread reports each failure to write the outbox and each success
(`report`); the log says so once the first task run is held up. A task run ending while the outbox cannot be written is held at the
gate (`admit`). On a full file system it waits for room (ASSETLOG_OUTBOX_FULL=
block, at most ASSETLOG_OUTBOX_FULL_WAIT_SECONDS) or fails at once (=fail); an
unwritable or damaged outbox fails at once, since waiting cannot fix it. Either
way the run raises instead of returning with events that are not durable.

A full episode stays full through an I/O error SQLite gives no reason for
(`OutboxUnavailable.unexplained`): such an error counts as full only while the
file system has no room, and room freed between the failed write and that look
made the waiting runs of block mode fail at once (the only way we found for
the gate to fail a waiting run early, and likely how
`test_block_mode_waits_for_room_then_every_event_is_delivered` failed once in the
suite, under load). The writer's next write says what is true: it succeeds, or
fails again.
"""

from __future__ import annotations

import logging
import threading
import time

from assetlog.producer.recording_errors import FULL, OutboxUnavailable

log = logging.getLogger("assetlog.producer")


class OutboxGate:
    def __init__(self, mode: str, wait_seconds: float, cond: threading.Condition) -> None:
        self.mode = mode
        self.wait_seconds = wait_seconds
        self._cond = cond
        self.problem: OutboxUnavailable | None = None  # read without the lock on the hot path
        self._since = 0.0
        self._told = False  # the log has said so for this episode

    def report(self, problem: OutboxUnavailable | None) -> None:
        """Writer thread: the outbox failed with `problem`, or (None) took a write again."""
        if (problem is None) == (self.problem is None) and (problem is None or str(problem) == str(self.problem)):
            return
        if problem is not None and problem.unexplained and self.problem is not None and self.problem.kind == FULL:
            return  # most likely the same full file system, room just made: the next write will tell
        with self._cond:
            if problem is not None and self.problem is None:
                self._since, self._told = time.monotonic(), False
            elif problem is None and self.problem is not None and self._told:
                log.warning("the outbox %s takes events again (after %.1fs)", self.problem.path,
                            time.monotonic() - self._since)
            self.problem = problem
            self._cond.notify_all()

    def _consequence(self, problem: OutboxUnavailable) -> str:
        if problem.kind == FULL and self.mode == "block":
            return f"wait up to {self.wait_seconds:g}s for room (ASSETLOG_OUTBOX_FULL=block), then fail"
        return "fail (their events cannot be made durable)"

    def admit(self, what: str, waited_since: float | None = None) -> None:
        """Caller side: return once the outbox takes writes; raise OutboxUnavailable (naming
        `what` was not recorded) if it does not within the policy's bound."""
        problem = self.problem
        if problem is None:
            return
        if not self._told:  # said once per episode, when it first holds a task run up
            self._told = True
            log.error("%s; task runs ending now %s", problem, self._consequence(problem))
        if problem.kind == FULL and self.mode == "block":
            deadline = (waited_since or time.monotonic()) + self.wait_seconds
            with self._cond:
                while self.problem is not None and self.problem.kind == FULL:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(min(remaining, 0.25))
                problem = self.problem
            if problem is None:
                return
            raise OutboxUnavailable(f"{what} could not be made durable within {self.wait_seconds:g}s "
                                    f"(ASSETLOG_OUTBOX_FULL_WAIT_SECONDS): {problem}", problem.kind, problem.path)
        raise OutboxUnavailable(f"{what} could not be made durable: {problem}", problem.kind, problem.path)
