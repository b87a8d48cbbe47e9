"""Who may read: bearer tokens, or a trusted reverse proxy's header, checked before any route runs.

`assetlog serve` requires one of them unless it is started with `--no-auth`
on a loopback address. Tokens (see `assetlog.tokens`) come as
`Authorization: Bearer <token>` (tools) or as the HttpOnly cookie that
`/login` sets (people in a browser: no JavaScript needed). Behind an
authenticating proxy, the user it names in a header is believed only when the
request comes from one of the configured proxy addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from assetlog.tokens import TokenChecker
from assetlog.web.pages import render

COOKIE = "assetlog_token"
OPEN_PATHS = ("/healthz", "/login")  # answer without credentials: no lineage in them
OPEN_PREFIXES = ("/static/",)
MAX_LOGIN_BODY = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AuthPolicy:
    """What a request must show. `tokens` accepts bearer tokens; `trusted_header` (with
    `trusted_proxies`) accepts the user a proxy names. At least one must be set."""

    tokens: TokenChecker | None = None
    trusted_header: str | None = None
    trusted_proxies: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        if self.tokens is None and self.trusted_header is None:
            raise ValueError("an AuthPolicy needs tokens, a trusted header, or both")
        if self.trusted_header and not self.trusted_proxies:
            raise ValueError("a trusted header needs the proxies it is trusted from")


def _token_of(scope: Scope) -> str | None:
    headers = dict(scope.get("headers", []))
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    cookie_header = headers.get(b"cookie", b"").decode("latin-1")
    if cookie_header:
        cookies = SimpleCookie()
        try:
            cookies.load(cookie_header)
        except Exception:  # a malformed cookie header is just no credentials
            return None
        if COOKIE in cookies:
            return cookies[COOKIE].value
    return None


def _proxy_user(scope: Scope, policy: AuthPolicy) -> str | None:
    if not policy.trusted_header:
        return None
    client = scope.get("client")
    try:
        address = ipaddress.ip_address(client[0]) if client else None
    except ValueError:
        return None
    if address is None or not any(address in network for network in policy.trusted_proxies):
        return None
    value = dict(scope.get("headers", [])).get(policy.trusted_header.lower().encode("latin-1"), b"")
    user = value.decode("latin-1").strip()
    return user or None


class Authentication:
    """ASGI middleware: a request without valid credentials gets 401 before any route runs."""

    def __init__(self, app: ASGIApp, policy: AuthPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or await self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await _refusal(scope)(scope, receive, send)

    async def _allowed(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        if _proxy_user(scope, self.policy):
            return True
        token = _token_of(scope)
        return bool(token and self.policy.tokens and await run_in_threadpool(self.policy.tokens.check, token))


def _refusal(scope: Scope) -> Response:
    message = "sign in: send `Authorization: Bearer <token>` (make one with `assetlog tokens create NAME`)"
    if scope.get("path", "").startswith("/api/"):
        return JSONResponse({"error": "unauthorized", "message": message}, status_code=401,
                            headers={"www-authenticate": 'Bearer realm="assetlog"'})
    request = Request(scope)
    return _login_page(request, "Sign in with an access token to read the lineage.", status_code=401,
                       next_path=_safe_next(request.url.path))


def _safe_next(path: str) -> str:
    """Only a path on this server: never an open redirect."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _login_page(request: Request, message: str, status_code: int = 200, next_path: str = "/") -> Response:
    response = render(request, "login.html", status_code=status_code, message=message, next=next_path)
    response.headers["cache-control"] = "no-store"
    return response


async def _login(request: Request) -> Response:
    policy: AuthPolicy | None = request.app.state.auth
    if request.method == "GET":
        return _login_page(request, "Sign in with an access token to read the lineage.")
    body = await request.body()
    fields = parse_qs(body[:MAX_LOGIN_BODY].decode("utf-8", "replace"))
    token = (fields.get("token") or [""])[0].strip()
    next_path = _safe_next((fields.get("next") or ["/"])[0])
    if not (policy and policy.tokens and token and await run_in_threadpool(policy.tokens.check, token)):
        return _login_page(request, "That token is not valid (unknown, revoked or mistyped).", 401, next_path)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


routes = [Route("/login", _login, methods=["GET", "POST"])]
