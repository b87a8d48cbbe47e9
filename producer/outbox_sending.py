"""The writer thread's second half: committed outbox rows -> Kafka -> deleted rows.

`OutboxWriter` (the thread's loop and the group commit) inherits it. It hands
rows to the Kafka producer (`delivery.KafkaSender`), settles each epoch's
delivery reports (delete what Kafka acknowledged, keep what failed for a retry,
set aside what Kafka refuses for good), adopts the rows of publishers that are
gone, and publishes the snapshot `flush()` reads. Only the writer thread runs
it; a row leaves the outbox only once Kafka acknowledged every one of its
events.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque

from confluent_kafka import KafkaError

from assetlog import metrics
from assetlog.backoff import backoff_delay
from assetlog.config import Settings
from assetlog.producer.delivery import FAILED, UNSENT, KafkaSender, Row, describe
from assetlog.producer.outbox import Outbox
from assetlog.producer.recording_errors import outbox_problem

log = logging.getLogger("assetlog.producer")

MAX_RETRY_DELAY = 60.0


class OutboxSending:
    """Sending and settling, on the writer thread (its state is set up by `OutboxWriter._run`)."""

    settings: Settings
    owner: str
    reconnects: int
    _cond: threading.Condition
    _committed_seq: int
    _unresolved: list[tuple[int, int]]
    _failed: list[tuple[int, int, str]]
    _rows: dict[int, Row]
    _unsent: deque[Row]
    _undeleted: list[int]
    _committed_local: int
    _sender: KafkaSender | None
    _outbox: Outbox | None

    def _delete_delivered(self, ids: list[int]) -> None:
        """Delete delivered rows; if the outbox cannot be written they are kept to delete later (and
        not sent again meanwhile; should the process end first, a resend only duplicates, which the
        consumers drop by event id)."""
        assert self._outbox is not None
        try:
            self._outbox.delete(ids)
        except (sqlite3.Error, OSError) as exc:
            if outbox_problem(self._outbox.path, exc) is None:
                raise
            if ids is not self._undeleted:
                self._undeleted.extend(ids)
            return
        if ids is self._undeleted:
            self._undeleted = []

    def _send(self, sender: KafkaSender) -> bool:
        sent = False
        while self._unsent and sender.has_room:
            row = self._unsent.popleft()
            if row.messages is None:  # adopted, or dropped from memory after a failure
                loaded = self._outbox.load(row.id) if self._outbox else None
                if loaded is None:  # delivered and deleted by someone else meanwhile
                    self._rows.pop(row.id, None)
                    continue
                row.messages = loaded[1]
                row.events = len(row.messages)
            sender.send(row)
            sent = True
        return sent

    def _replace_wedged(self, sender: KafkaSender) -> list[Row]:
        """The producer has known no broker for the grace time and will never reconnect
        (`assetlog/broker_watch.py`): a new one takes over. Its epoch is purged, not flushed (nothing
        can be); a row leaves the outbox only if no message of it failed, so what the old producer had
        not delivered stays there and the new one sends it (at worst twice; consumers drop duplicates
        by event id)."""
        log.warning("the Kafka producer has known no broker for %.0fs (librdkafka dropped them all, e.g. around "
                    "a broker restart, and will not reconnect); replacing it: the %d lineage events it had not "
                    "delivered stay in the outbox %s and the new producer sends them", sender.brokers.grace,
                    sender.epoch_events, self.settings.outbox_dir)
        self.reconnects += 1
        metrics.PRODUCER_RECONNECTS.inc()
        return sender.restart()

    def _settle(self, done: list[Row], resend_now: bool = False) -> None:
        """Apply an epoch's outcome: delete delivered rows, keep failed ones for a retry, set
        aside what Kafka can never accept. With `resend_now` (the producer was replaced: the failures
        were its own, not the messages'), failed rows go to the new producer at once (read back from
        the outbox, which kept only their undelivered messages), without backoff or a line each."""
        assert self._outbox is not None
        delivered = [row for row in done if not row.failed and not row.undeliverable]
        if delivered:
            self._delete_delivered([row.id for row in delivered])
            now = time.monotonic()
            for row in delivered:
                self._rows.pop(row.id, None)
                metrics.EVENTS_DELIVERED.labels(row.topic).inc(row.events)
                if row.committed_at:
                    metrics.PUBLISH_DURATION.labels(row.topic).observe(now - row.committed_at)
        for row in done:
            if row.undeliverable:
                metrics.DELIVERY_FAILURES.labels(row.topic, "undeliverable").inc(len(row.undeliverable))
                self._set_aside(row)
            if not row.failed:
                continue
            metrics.DELIVERY_FAILURES.labels(row.topic, "retried").inc(len(row.failed))
            error = describe(row.error)
            partial = len(row.failed) < row.events
            try:
                self._outbox.record_failure(row.id, error, row.failed if partial else None)
            except (sqlite3.Error, OSError) as exc:  # the row stays as it was: resent whole, at worst a duplicate
                if outbox_problem(self._outbox.path, exc) is None:
                    raise
            row.attempts += 1
            row.events = len(row.failed)
            row.state, row.messages, row.failed = FAILED, None, []
            if resend_now:  # (unsent, not failed: a flush waits for it rather than report it undelivered)
                row.state = UNSENT
                self._unsent.append(row)
                continue
            row.retry_at = time.monotonic() + backoff_delay(row.attempts - 1, 2.0, MAX_RETRY_DELAY)
            log.warning("%d lineage events for %s were not delivered (%s); they stay in the outbox and are "
                        "retried", row.events, row.topic, error)
        if delivered:
            # Kafka delivers again: what timed out while it was away is resent now, not after its
            # backoff, and a flush waits for it (a worker ending right after an outage would otherwise
            # leave it to the next publisher).
            for row in self._rows.values():
                if row.state == FAILED and _timed_out(row.error):
                    row.state = UNSENT
                    self._unsent.append(row)

    def _set_aside(self, row: Row) -> None:
        """Messages Kafka refused for good (too large, invalid) become an undeliverable row: never
        sent again, never waited for; `assetlog outbox dead-letter` moves them out of the outbox."""
        assert self._outbox is not None
        error = describe(row.permanent_error)
        try:
            marked = self._outbox.set_undeliverable(row.id, error, row.undeliverable, row.failed)
        except (sqlite3.Error, OSError) as exc:
            if outbox_problem(self._outbox.path, exc) is None:
                raise
            row.failed.extend(row.undeliverable)  # try again later, as a failure
            row.error = row.error or row.permanent_error
            row.undeliverable = []
            return
        log.error("%d lineage events for %s can never be delivered (%s); they are set aside as row %d of the "
                  "outbox %s: `assetlog outbox dead-letter --undeliverable` moves them out of the way",
                  len(row.undeliverable), row.topic, error, marked, self._outbox.path)
        row.undeliverable = []
        if not row.failed:
            self._rows.pop(row.id, None)

    def _adopt(self) -> None:
        assert self._outbox is not None
        for stored in self._outbox.adopt(self.owner):
            if stored.id not in self._rows:
                row = Row(stored.id, stored.topic, stored.events, None, 0, stored.attempts)
                self._rows[stored.id] = row
                if self._sender is not None:
                    self._unsent.append(row)
                else:
                    row.state = FAILED
        self._publish_snapshot()  # a flush() starting now must see the adopted rows

    def _publish_snapshot(self) -> None:
        unresolved = [(row.seq, row.events) for row in self._rows.values() if row.state != FAILED]
        failed = [(row.seq, row.events, describe(row.error) if row.error else "not sent yet")
                  for row in self._rows.values() if row.state == FAILED]
        with self._cond:
            self._committed_seq = self._committed_local
            self._unresolved, self._failed = unresolved, failed
            self._cond.notify_all()


def _timed_out(error: object) -> bool:
    """A delivery that failed because no broker answered in time (not a refusal by one)."""
    code = getattr(error, "code", None)
    return callable(code) and code() == KafkaError._MSG_TIMED_OUT
