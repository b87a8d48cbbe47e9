"""The web application: routes, templates, errors as clear 4xx/5xx answers, strict browser policies.

Read-only by construction: the only thing it holds is a `LineageStore`, whose
sessions and transactions are READ ONLY (and which `assetlog serve` opens
with the least-privileged reader DSN when there is one). Errors never show a
stack trace: /api/ answers `{"error": ..., "message": ...}`, pages an HTML
page with the same message; unexpected ones are logged here and answered 500.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assetlog import __version__
from assetlog.query.catalog import AssetNotFound
from assetlog.query.render import when
from assetlog.query.store import LineageStore, QueryTimeout
from assetlog.visible import visible
from assetlog.web import api, auth, pages, urls
from assetlog.web.auth import Authentication, AuthPolicy
from assetlog.web.metrics import RequestMetrics
from assetlog.web.params import BadRequest
from assetlog.web.picture import GraphDrawer, health

log = logging.getLogger("assetlog.web")

# No script runs on these pages, not even ours; styles and images only from this server.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (pure ASGI: it does not buffer bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
                            if name.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def templates() -> Environment:
    env = Environment(loader=PackageLoader("assetlog.web", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, finalize=shown)
    env.globals.update(asset_url=urls.asset_url, list_url=urls.list_url, api_url=urls.api_url,
                       graph_url=urls.graph_url, web_link=urls.web_link, health=health, version=__version__)
    env.filters["when"] = when
    return env


def shown(value: Any) -> Any:
    """Every `{{ ... }}` of the templates, text and trusted markup alike: bidi and terminal controls
    shown as `\\uXXXX`, never applied (a key with U+202E must not read backwards on the page)."""
    if isinstance(value, Markup):
        return Markup(visible(str(value)))
    if isinstance(value, str):
        return visible(value)
    return value


def _error(request: Request, status: int, error: str, message: str) -> Response:
    if request.url.path.startswith("/api/") or request.url.path == "/healthz":
        response: Response = JSONResponse({"error": error, "message": message}, status_code=status)
    else:
        response = pages.render(request, "error.html", status_code=status, status=status, message=message)
    response.headers.update(SECURITY_HEADERS)  # 500s bypass the middleware
    return response


def _bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, "bad_request", str(exc))


def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, "not_found", str(exc))


def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(request, 404, "not_found", f"no page at {request.url.path}; the asset list is at /")
    return _error(request, exc.status_code, "http_error", str(exc.detail))


def _timeout(request: Request, exc: Exception) -> Response:
    return _error(request, 503, "timeout", str(exc))


def _database(request: Request, exc: Exception) -> Response:
    log.warning("database error on %s: %s", request.url.path, exc)
    return _error(request, 503, "database_unavailable",
                  "the projection database cannot be reached right now; try again shortly")


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return _error(request, 500, "internal_error", "something went wrong on the server; it has been logged")


def create_app(store: LineageStore, *, drawer: GraphDrawer | None = None, auth_policy: AuthPolicy | None = None,
               **starlette: Any) -> Starlette:
    """The web view over `store` (which the caller closes); `drawer` lays out lineage pictures.

    With `auth_policy` every route but /healthz, /login and /static asks for credentials; without
    one the view is open, which `assetlog serve` allows only on loopback with `--no-auth`."""
    app = Starlette(
        routes=[*pages.routes, *api.routes, *(auth.routes if auth_policy else []),
                Mount("/static", StaticFiles(packages=[("assetlog.web", "static")]), name="static")],
        exception_handlers={
            BadRequest: _bad_request,
            AssetNotFound: _not_found,
            QueryTimeout: _timeout,
            psycopg.OperationalError: _database,
            HTTPException: _http,
            Exception: _unexpected,
        },
        **starlette,
    )
    if auth_policy is not None:
        app.add_middleware(Authentication, policy=auth_policy)
    app.add_middleware(SecurityHeaders)  # refusals carry the headers too
    app.add_middleware(RequestMetrics, routes=app.routes)  # outermost: refused and failed requests are counted too
    app.state.store = store
    app.state.auth = auth_policy
    app.state.drawer = drawer or GraphDrawer.find(urls.asset_url)
    app.state.templates = templates()
    return app
