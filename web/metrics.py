"""Request counts and latencies of the web view, by route template (never by path: paths carry asset keys)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assetlog.metrics import HTTP_DURATION, HTTP_REQUESTS


class RequestMetrics:
    """ASGI middleware: one count and one latency observation per answered HTTP request."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.routes = routes  # to name requests refused before routing (e.g. 401s) by their route too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            route = getattr(scope.get("route"), "path", None) or self._template(scope)
            HTTP_REQUESTS.labels(route=route, method=scope.get("method", ""), status=str(status)).inc()
            HTTP_DURATION.labels(route=route).observe(time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        for route in self.routes:
            if route.matches(scope)[0] is Match.FULL:
                return getattr(route, "path", "unmatched")
        return "unmatched"
