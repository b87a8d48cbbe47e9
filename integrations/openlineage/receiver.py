"""Accepting OpenLineage events: bytes in, Assetlog events durable in the outbox, or a reason why not.

`Ingestor` is shared by the HTTP receiver (`http_app`) and the Kafka reader
(`kafka_ingest`): size limit, gzip, JSON, the spec's schemas, the mapping
(`ingest.translate`) and the run state (`runs.RunStore`). An event is
acknowledged only once its Assetlog events are committed to the producer's
outbox (`Publisher.wait_committed`), which survives a crash and is sent to
Kafka by the publisher. Events of one run are handled one at a time (striped
locks), events of different runs concurrently, so the outbox commits them in groups.

The Kafka reader calls `ingest` from its thread; the HTTP receiver awaits
`ingest_bytes_async` on the event loop, which does the (short) work in the loop
and waits for the outbox without a thread per request: one `CommitWaiter`
thread waits for the publisher on behalf of every waiting request and wakes
the loop once per commit. Handing each request to a worker thread and back
cost more than the work itself. One Ingestor serves one of the two.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
import zlib
from dataclasses import dataclass, replace
from typing import Any

import orjson

from assetlog.integrations.openlineage.ingest import Translation, translate, uuid_text
from assetlog.integrations.openlineage.runs import RunStore
from assetlog.integrations.openlineage.spec import InvalidOpenLineage, validate_event
from assetlog.producer.event_builders import ProducerIdentity
from assetlog.producer.publisher import Publisher
from assetlog.producer.recording_errors import EventTooLarge, LineageNotRecorded
from assetlog.schemas import METADATA

log = logging.getLogger("assetlog.integrations.openlineage")
DEFAULT_MAX_EVENT_BYTES = 512 * 1024  # decompressed; Assetlog events must stay under Kafka's 1 MB default
_LOCK_STRIPES = 64


@dataclass(frozen=True)
class Outcome:
    """201 accepted (with how many Assetlog events), 400 refused (reason), 503 not durable (reason)."""

    status: int
    reason: str | None = None
    events: int = 0
    idempotency_key: str | None = None

    def body(self) -> dict[str, Any]:
        if self.status == 201:
            return {"accepted": True, "assetlog_events": self.events, "idempotency_key": self.idempotency_key}
        return {"accepted": False, "error": self.reason}


def decode_body(body: bytes, gzipped: bool, limit: int) -> Any:
    """The JSON value of a request body (gzip or not), refusing more than `limit` bytes of JSON."""
    if gzipped or body[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, limit + 1)  # never inflates more than the limit (gzip bombs)
        except zlib.error as exc:
            raise InvalidOpenLineage(f"the body is not valid gzip ({exc})") from None
        if len(body) > limit:
            raise InvalidOpenLineage(f"the event is over the size limit of {limit} bytes (after gzip)")
        if not inflater.eof:
            raise InvalidOpenLineage("the gzip body is truncated")
    if len(body) > limit:
        raise InvalidOpenLineage(f"the event is {len(body)} bytes, over the size limit of {limit} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidOpenLineage(f"the body is not valid JSON ({exc})") from None


def as_declaration_run(job_event: dict[str, Any]) -> dict[str, Any]:
    """A JobEvent (spec 2: a job's declared inputs and outputs, no run) as an OTHER event of a run
    whose id is derived from the job, so its edges are recorded like a streaming job's: once each."""
    job = job_event["job"]
    run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"openlineage-job:{job['namespace']}/{job['name']}")
    return {**job_event, "eventType": "OTHER", "run": {"runId": str(run_id), "facets": {}}}


class CommitWaiter:
    """Futures resolved once the outbox holds what was published before each was made: one thread
    waits for the publisher for all of them, and each event loop is woken once per commit."""

    def __init__(self, publisher: Publisher, timeout: float) -> None:
        self.publisher = publisher
        self.timeout = timeout
        self._cond = threading.Condition()
        self._pending: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[str | None]]] = []
        self._thread: threading.Thread | None = None

    def wait(self) -> asyncio.Future[str | None]:
        """A future of None once committed, else why not; call it after publishing."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        with self._cond:
            self._pending.append((loop, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="assetlog-openlineage-commits", daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch, self._pending = self._pending, []
            try:
                problem = self.publisher.wait_committed(self.timeout)  # covers all published before the batch waited
            except Exception as exc:  # the publisher stopped: nothing more becomes durable
                problem = str(exc)
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[str | None]]] = {}
            for loop, future in batch:
                by_loop.setdefault(loop, []).append(future)
            for loop, futures in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, futures, problem)
                except RuntimeError:  # that loop is closed: nobody waits any more
                    pass


def _resolve(futures: list[asyncio.Future[str | None]], problem: str | None) -> None:
    for future in futures:
        if not future.done():
            future.set_result(problem)


class Ingestor:
    def __init__(self, publisher: Publisher, store: RunStore, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 commit_timeout: float = 30.0):
        """`commit_timeout`: how long an event waits for the outbox before it is answered 503."""
        self.publisher = publisher
        self.commit_timeout = commit_timeout
        self.store = store
        self.max_event_bytes = max_event_bytes
        self.identity = ProducerIdentity.current()
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._async_locks: list[asyncio.Lock] | None = None  # made in the event loop that uses them
        self._commits = CommitWaiter(publisher, commit_timeout)
        self._to_save: list[tuple[Translation, asyncio.Future[None]]] = []

    def ingest_bytes(self, body: bytes, gzipped: bool = False) -> Outcome:
        try:
            event = decode_body(body, gzipped, self.max_event_bytes)
        except InvalidOpenLineage as exc:
            return Outcome(400, str(exc))
        return self.ingest(event)

    def ingest(self, event: Any) -> Outcome:
        checked = self._checked(event)
        if isinstance(checked, Outcome):
            return checked
        event, kind, run_id = checked
        with self._locks[hash(run_id) % _LOCK_STRIPES]:
            queued = self._publish(event, kind, run_id)
            if isinstance(queued, Outcome):
                return queued
            return self._finish(queued, self.publisher.wait_committed(self.commit_timeout))

    async def ingest_bytes_async(self, body: bytes, gzipped: bool = False) -> Outcome:
        """`ingest_bytes` for the event loop: the same steps, the outbox commit awaited."""
        try:
            event = decode_body(body, gzipped, self.max_event_bytes)
        except InvalidOpenLineage as exc:
            return Outcome(400, str(exc))
        checked = self._checked(event)
        if isinstance(checked, Outcome):
            return checked
        event, kind, run_id = checked
        if self._async_locks is None:
            self._async_locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]
        async with self._async_locks[hash(run_id) % _LOCK_STRIPES]:
            queued = self._publish(event, kind, run_id)
            if isinstance(queued, Outcome):
                return queued
            problem = await self._commits.wait()
            if problem is None:
                await self._save_soon(queued)
            return self._finish(queued, problem, saved=True)

    def _save_soon(self, translation: Translation) -> asyncio.Future[None]:
        """The run's state saved with those of every request resumed by the same commit: their
        continuations run one after the other in the loop, then one transaction saves them all."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._to_save:
            loop.call_soon(self._save_pending)
        self._to_save.append((translation, future))
        return future

    def _save_pending(self) -> None:
        batch, self._to_save = self._to_save, []
        try:
            self.store.save_many([(t.run_id, t.state, t.terminal) for t, _ in batch])
        except Exception as exc:  # the events are durable, the run state is not: the client resends
            for _, future in batch:
                future.set_exception(exc)
            return
        for _, future in batch:
            future.set_result(None)

    def _checked(self, event: Any) -> tuple[dict[str, Any], str, str] | Outcome:
        """The event (a JobEvent as its declaration run), its kind and run id; or why it is refused."""
        try:
            try:
                text = orjson.dumps(event)
            except orjson.JSONEncodeError as exc:  # e.g. nested deeper than orjson writes
                raise InvalidOpenLineage(f"the event cannot be stored as JSON ({exc})") from None
            if b"\\u0000" in text:  # PostgreSQL text cannot hold it: the consumers would refuse the events
                raise InvalidOpenLineage("the event contains a NUL character (\\u0000), which Assetlog cannot store")
            kind = validate_event(event)
            if kind == "DatasetEvent":
                raise InvalidOpenLineage(
                    "DatasetEvent is not accepted: Assetlog records a dataset's properties and metadata with the "
                    "run that wrote it; send that RunEvent (see docs/openlineage.md)")
            if kind == "JobEvent":
                event = as_declaration_run(event)
            run_id = uuid_text(event["run"]["runId"], "run.runId")  # the store's key, as translate() writes it
        except InvalidOpenLineage as exc:
            return Outcome(400, str(exc))
        except RecursionError:
            return Outcome(400, "the event is nested too deeply to validate")
        return event, kind, run_id

    def _publish(self, event: dict[str, Any], kind: str, run_id: str) -> Translation | Outcome:
        """Translate with the run's state and queue the Assetlog events (under the run's lock)."""
        try:
            translation = translate(event, self.store.load(run_id), self.publisher.topics, self.identity)
            if kind == "JobEvent":  # declared edges only: its facets must not replace what runs recorded
                translation = replace(translation, events=[e for e in translation.events
                                                           if e.event_type != METADATA])
            self.publisher.publish_events(translation.events)
        except InvalidOpenLineage as exc:
            return Outcome(400, str(exc))
        except EventTooLarge as exc:  # larger than Kafka accepts: resending cannot help
            return Outcome(400, str(exc))
        except LineageNotRecorded as exc:  # the outbox cannot take it now: the client should resend
            return Outcome(503, f"not stored, try again: {exc}")
        except ValueError as exc:  # a record its Avro schema refuses (e.g. a number out of range)
            return Outcome(400, f"cannot encode the event's Assetlog events ({' '.join(str(exc).split())[:300]})")
        except Exception as exc:  # a bug: refuse this event (a Kafka reader dead-letters it), keep serving
            log.exception("cannot translate an OpenLineage event")
            return Outcome(400, f"internal error while translating the event ({type(exc).__name__}); "
                                "see the receiver's log")
        return translation

    def _finish(self, translation: Translation, problem: str | None, saved: bool = False) -> Outcome:
        """201 once the events are durable (the run's state saved after them), else 503."""
        if problem is not None:
            return Outcome(503, f"not stored, try again: {problem}")
        if not saved:
            self.store.save(translation.run_id, translation.state, translation.terminal)
        return Outcome(201, events=len(translation.events), idempotency_key=translation.idempotency_key)
