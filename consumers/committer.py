"""Commit batches on a background thread, in order, while the next batch is decoded.

PostgreSQL does a batch's COPY and upserts on its own core; without this the
consumer would sit idle waiting for it, then decode the next batch while
PostgreSQL sits idle. One thread and a queue of one keep batches strictly in
order (offsets only ever move forward) with at most two in flight. An error in
the thread is kept and raised in the caller at its next call, as the
`eventsourcing` runners do, so a failure never passes silently.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
_CLOSE = object()


class BackgroundCommitter(Generic[Item]):
    """Runs `commit(item)` for each submitted item on one thread, in submission order."""

    def __init__(self, commit: Callable[[Item], None], depth: int = 1) -> None:
        self._commit = commit
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="assetlog-committer", daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> None:
        """Queue `item`; blocks while the queue is full; raises the thread's error if it failed."""
        while True:
            self.raise_if_failed()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def drain(self) -> None:
        """Wait until every submitted item is committed (or the thread failed), then raise its error."""
        self._queue.join()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread once the queue is empty (does not raise)."""
        self._queue.put(_CLOSE)
        self._thread.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _CLOSE:
                    return
                if self._error is None:  # after a failure, later batches must not commit
                    self._commit(item)  # type: ignore[arg-type]
            except BaseException as exc:  # handed to the caller, never lost
                self._error = exc
            finally:
                self._queue.task_done()
