"""`POST /api/v1/lineage`: the OpenLineage HTTP transport's endpoint (Marquez's path), on Starlette.

201 once the event's Assetlog events are in the outbox; 400 with the reason for
invalid JSON, a schema violation or an oversized body; 401 without a valid
access token when the receiver requires one (the web view's own check,
`assetlog.web.auth.Authentication`, so the rule is written once); 503 when the outbox cannot be written (the client retries).
The request's work is short and runs in the event loop; the wait for the outbox
commit is awaited (`Ingestor.ingest_bytes_async`), so requests of several clients
share commits. No exception escapes a request: the server keeps serving.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from assetlog.integrations.openlineage.receiver import Ingestor, Outcome
from assetlog.tokens import TokenChecker
from assetlog.web.auth import Authentication, AuthPolicy
from assetlog.web.metrics import RequestMetrics

log = logging.getLogger("assetlog.integrations.openlineage")
LINEAGE_PATH = "/api/v1/lineage"


class Counters:
    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.unavailable = 0

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "rejected": self.rejected, "unavailable": self.unavailable}


def create_app(ingestor: Ingestor, tokens: TokenChecker | None = None) -> Starlette:
    """The receiver; with `tokens`, every request but /healthz needs `Authorization: Bearer <token>`."""
    counters = Counters()
    # Bodies are refused beyond this before they are read whole (a gzip body inflates at most to the limit).
    max_body = ingestor.max_event_bytes

    async def lineage(request: Request) -> JSONResponse:
        try:
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    outcome = Outcome(400, f"the body is over the size limit of {max_body} bytes")
                    break
            else:
                gzipped = "gzip" in request.headers.get("content-encoding", "").lower()
                outcome = await ingestor.ingest_bytes_async(bytes(body), gzipped)
        except Exception as exc:  # a bug must cost one request, never the receiver
            log.exception("error while receiving an OpenLineage event")
            outcome = Outcome(500, f"internal error: {type(exc).__name__}")
        if outcome.status == 201:
            counters.accepted += 1
        elif outcome.status == 503:
            counters.unavailable += 1
        else:
            counters.rejected += 1
            log.warning("refused an OpenLineage event: %s", outcome.reason)
        return JSONResponse(outcome.body(), status_code=outcome.status)

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **counters.as_dict()})

    app = Starlette(routes=[Route(LINEAGE_PATH, lineage, methods=["POST"]), Route("/healthz", health)])
    if tokens is not None:
        app.add_middleware(Authentication, policy=AuthPolicy(tokens=tokens))
    app.add_middleware(RequestMetrics, routes=app.routes)  # assetlog_http_* on --metrics-port (401s counted too)
    app.state.counters = counters
    return app

