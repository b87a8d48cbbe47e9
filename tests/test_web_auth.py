"""Nobody reads the lineage through the web view without credentials.

Every route of the app (pages and /api) is asked without a token, with a bad
one, with a valid one and with a revoked one, on the real database through
the read-only role; the trusted-header mode is believed only from the proxy's
address; and `assetlog serve` / `assetlog tokens` behave as documented.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import psycopg
import pytest
from conftest import Isolated
from query_world import reader_dsn
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from web_support import RAW_KEY, web_store_fixture, web_world_fixture  # noqa: F401 - the `store` and `world` fixtures

from assetlog.config import ENV_POSTGRES_READONLY_DSN
from assetlog.query.store import LineageStore
from assetlog.tokens import TokenChecker, create_token, revoke_token, stored_digest
from assetlog.web import create_app
from assetlog.web.app import SECURITY_HEADERS
from assetlog.web.auth import OPEN_PATHS, AuthPolicy


def _checker(store: LineageStore) -> TokenChecker:
    return TokenChecker(lambda token_id: store.read(lambda conn: stored_digest(conn, token_id)), cache_seconds=0)


@pytest.fixture(scope="module")
def token(world: Isolated) -> str:
    with psycopg.connect(world.dsn) as conn:
        made, _ = create_token(conn, "auth test")
    return made


@pytest.fixture(scope="module")
def app(store: LineageStore):
    return create_app(store, auth_policy=AuthPolicy(tokens=_checker(store), trusted_header="X-Forwarded-User",
                                                    trusted_proxies=(ipaddress.ip_network("10.9.0.0/16"),)))


def every_route(app) -> list[str]:
    """A URL for every route the app has, so a route added later is covered without editing this test."""
    urls = []
    for route in app.routes:
        if isinstance(route, Mount):
            urls.append(route.path + "/style.css")
        elif isinstance(route, Route):
            urls.append(route.path + "?key=" + RAW_KEY)
    return urls


def test_every_route_refuses_a_request_without_valid_credentials(app, token: str) -> None:
    routes = every_route(app)
    assert {"/", "/asset", "/api/assets", "/api/asset", "/api/lineage", "/api/history"} <= {
        url.split("?")[0] for url in routes}
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        for url in routes:
            path = url.split("?")[0]
            if path in OPEN_PATHS or path.startswith("/static"):
                assert client.get(url).status_code == 200, url
                continue
            for headers in ({}, {"Authorization": "Bearer " + token[:-1] + "x"}, {"Authorization": "Basic " + token},
                            {"Authorization": "Bearer alt_0000000000000000_" + "a" * 43}):
                refused = client.get(url, headers=headers)
                assert refused.status_code == 401, (url, headers, refused.status_code)
                assert RAW_KEY not in refused.text  # nothing of the lineage leaks into the refusal
                assert refused.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]
                if path.startswith("/api/"):
                    assert refused.json()["error"] == "unauthorized"
                    assert refused.headers["www-authenticate"].startswith("Bearer")
                else:
                    assert 'action="/login"' in refused.text
            allowed = client.get(url, headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 200, (url, allowed.status_code, allowed.text[:300])


def test_a_revoked_token_stops_working(app, world: Isolated) -> None:
    with psycopg.connect(world.dsn) as conn:
        made, _ = create_token(conn, "soon revoked")
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/assets", headers={"Authorization": f"Bearer {made}"}).status_code == 200
        with psycopg.connect(world.dsn) as conn:
            revoke_token(conn, "soon revoked")
        assert client.get("/api/assets", headers={"Authorization": f"Bearer {made}"}).status_code == 401


def test_login_form_sets_a_session_cookie_and_never_redirects_off_site(app, token: str) -> None:
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        wrong = client.post("/login", data={"token": "nope", "next": "/asset"})
        assert wrong.status_code == 401 and "not valid" in wrong.text and "set-cookie" not in wrong.headers
        signed = client.post("/login", data={"token": token, "next": "//evil.example/x"})
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert client.get("/api/assets").status_code == 200  # the cookie now signs requests in


def test_trusted_header_is_believed_only_from_the_proxy(store: LineageStore, app) -> None:
    header = {"X-Forwarded-User": "alice"}
    with TestClient(app, raise_server_exceptions=False, client=("10.9.3.4", 40000)) as via_proxy:
        assert via_proxy.get("/api/assets", headers=header).status_code == 200
        assert via_proxy.get("/api/assets").status_code == 401  # the proxy sent no user
    with TestClient(app, raise_server_exceptions=False, client=("192.0.2.7", 40000)) as direct:
        assert direct.get("/api/assets", headers=header).status_code == 401


# --- the commands --------------------------------------------------------------------------------------

def _assetlog(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assetlog", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _one_line(done: subprocess.CompletedProcess[str], status: int, fragment: str) -> None:
    assert done.returncode == status, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and fragment in done.stderr, done.stderr


def test_tokens_commands_and_serve_require_a_token_by_default(world: Isolated) -> None:
    env = world.env(**{ENV_POSTGRES_READONLY_DSN: reader_dsn(world.dsn)})
    made = _assetlog(env, "tokens", "create", "cli user", "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    _one_line(_assetlog(env, "tokens", "create", "cli user"), 1, "exists already")
    listed = json.loads(_assetlog(env, "tokens", "list", "--json").stdout)["tokens"]
    assert "cli user" in [row["name"] for row in listed] and token not in json.dumps(listed)
    _one_line(_assetlog(env, "tokens", "revoke", "nobody"), 1, "no token is named")
    _one_line(_assetlog(env, "serve", "--host", "0.0.0.0", "--port", "0", "--no-auth"), 1,
              "--no-auth is allowed only on a loopback address")
    _one_line(_assetlog(env, "serve", "--port", "0", "--trusted-header", "X-User"), 1,
              "--trusted-header and --trusted-proxy go together")

    server = subprocess.Popen([sys.executable, "-m", "assetlog", "serve", "--port", "0"], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", server.stderr.readline())
        assert found
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(found.group(1) + "api/assets", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(found.group(1) + "api/assets", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200 and json.load(answer)["assets"]
    finally:
        server.terminate()
        server.wait(timeout=30)
