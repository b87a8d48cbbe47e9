"""`/api/...`: every page of the web view as JSON, the same documents `--json` prints on the CLI.

Errors are JSON too: `{"error": "not_found" | "bad_request" | ..., "message": "..."}`
with the matching status (see `assetlog.web.app`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from assetlog.query.store import LineageStore
from assetlog.visible import visible
from assetlog.web import params

MAX_ASSETS = 1000
MAX_HISTORY = 500
MAX_NODES = 10_000


class VisibleJSONResponse(JSONResponse):
    """JSON whose bidi and terminal controls travel as `\\uXXXX` escapes: the same data, but a
    browser showing the raw document does not apply them."""

    def render(self, content: Any) -> bytes:
        return visible(super().render(content).decode("utf-8")).encode("utf-8")


def _store(request: Request) -> LineageStore:
    return request.app.state.store


def assets(request: Request) -> JSONResponse:
    """`?search=&owner=&limit=&after=`: assets in key order, like `assetlog assets --json`."""
    q = request.query_params
    page = _store(request).search(params.text(q, "search"), owner=params.text(q, "owner"),
                                  limit=params.whole(q, "limit", 100, 1, MAX_ASSETS) or 100,
                                  after=params.text(q, "after"))
    return VisibleJSONResponse(page.to_json())


def asset(request: Request) -> JSONResponse:
    """`?key=&as_of=`: one asset, like `assetlog show --json`."""
    q = request.query_params
    return VisibleJSONResponse(_store(request).asset(params.key(q), as_of=params.as_of(q)).to_json())


def lineage(request: Request) -> JSONResponse:
    """`?key=&direction=&depth=&limit=&as_of=`: the lineage graph, like `assetlog lineage --json`."""
    q = request.query_params
    graph = _store(request).lineage(
        params.key(q), direction=params.direction(q), depth=params.depth(q, None),
        limit=params.whole(q, "limit", None, 1, MAX_NODES), as_of=params.as_of(q))
    return VisibleJSONResponse(graph.to_json())


def history(request: Request) -> JSONResponse:
    """`?key=&limit=&before=|page=`: materializations newest first, like `assetlog history --json`."""
    q = request.query_params
    limit = params.whole(q, "limit", 20, 1, MAX_HISTORY) or 20
    before = params.cursor(q)
    page = params.whole(q, "page", 1, 1, 1_000_000) or 1
    if before is not None and page > 1:
        raise params.BadRequest("use either before (a cursor) or page, not both")
    answer = _store(request).history(params.key(q), limit=limit, before=before, offset=(page - 1) * limit)
    return VisibleJSONResponse(answer.to_json())


def health(request: Request) -> JSONResponse:
    """Liveness: the server answers (the database is checked when the server starts)."""
    return VisibleJSONResponse({"status": "ok"})


routes = [
    Route("/api/assets", assets),
    Route("/api/asset", asset),
    Route("/api/lineage", lineage),
    Route("/api/history", history),
    Route("/healthz", health),
]
