"""Web traps: NUL in parameters, bidi controls in keys, markup in a stored url.

`%00` in any parameter used to reach PostgreSQL (which refuses NUL in text)
and come back as a 500 with a logged traceback; bidi overrides in keys and
names were sent to the browser as they are and applied; an http(s) `url`
carrying markup became a link whose only guard was the templates'
autoescaping. The world is small and the module's own, on the real database,
read through the read-only role as `assetlog serve` does.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator

import pytest
from conftest import Isolated, StackEndpoints, create_isolated, drop_isolated
from events_factory import Asset, TaskRun, Upstream
from query_world import project, reader_dsn
from starlette.testclient import TestClient
from web_support import assert_nothing_injected

from assetlog.query.store import LineageStore
from assetlog.web import create_app
from assetlog.web.picture import GraphDrawer
from assetlog.web.urls import asset_url

RLO = "\u202e"
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
BIDI_KEY = f"s3://bidi/report{RLO}vsc.exe"  # reads s3://bidi/reportexe.csv when the override is applied
BIDI_NAME = f"Quarterly {RLO}tropeR\u2067"
MARKUP_KEY = "s3://hostile/markup-url.csv"
# No whitespace: a plain http(s) address to a check that only looks at the scheme and at spaces.
MARKUP_URL = "https://evil.example/\"><script>alert('url')</script><svg/onload=alert('url')>"
PLAIN = "s3://bidi/plain.csv"


@pytest.fixture(scope="module")
def world(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    isolated = create_isolated(stack, tmp_path_factory.mktemp("outbox"))
    try:
        project(isolated.dsn, [
            TaskRun([Asset(BIDI_KEY, {"name": BIDI_NAME, "description": f"d{RLO}", "owners": [f"o{RLO}"],
                                      "url": None})], [Upstream(PLAIN, "EXPLICIT", None)]),
            TaskRun([Asset(MARKUP_KEY, {"name": "markup url", "description": None, "owners": None,
                                        "url": MARKUP_URL})]),
        ])
        yield isolated
    finally:
        drop_isolated(stack, isolated)


@pytest.fixture(scope="module")
def client(world: Isolated) -> Iterator[TestClient]:
    import shutil

    with LineageStore(reader_dsn(world.dsn), pool_size=2) as store, TestClient(
            create_app(store, drawer=GraphDrawer(asset_url, shutil.which("dot"))),
            raise_server_exceptions=False) as test_client:
        yield test_client


# --- NUL ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, query, name", [
    ("/asset", "key=%00", "key"),
    ("/asset", f"key={PLAIN}%00", "key"),
    ("/asset/graph.svg", "key=a%00b", "key"),
    ("/", "search=%00", "search"),
    ("/", "owner=x%00", "owner"),
    ("/", "after=%00", "after"),
    ("/api/asset", "key=%00", "key"),
    ("/api/asset", f"key={PLAIN}&as_of=2025-01-01%00", "as_of"),
    ("/api/lineage", f"key={PLAIN}&direction=both%00", "direction"),
    ("/api/lineage", f"key={PLAIN}&depth=1%00", "depth"),
    ("/api/history", f"key={PLAIN}&before=%00", "before"),
    ("/api/assets", "search=%00", "search"),
    ("/api/assets", "limit=%00", "limit"),
])
def test_nul_in_a_parameter_is_a_400_that_names_it(client: TestClient, path: str, query: str, name: str) -> None:
    answer = client.get(f"{path}?{query}")
    assert answer.status_code == 400, answer.text
    assert "Traceback" not in answer.text
    assert f"{name} must not contain a NUL character" in html.unescape(answer.text)


# --- bidi controls ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, key", [
    ("/asset", BIDI_KEY), ("/asset", PLAIN), ("/", None), ("/asset/graph.svg", PLAIN),
    ("/api/asset", BIDI_KEY), ("/api/lineage", PLAIN), ("/api/assets", None), ("/api/history", BIDI_KEY),
])
def test_bidi_controls_are_shown_not_applied(client: TestClient, path: str, key: str | None) -> None:
    answer = client.get(path, params={"key": key} if key else {})
    assert answer.status_code == 200, answer.text
    assert [c for c in answer.text if c in BIDI_CONTROLS] == []
    if path.startswith("/api/"):
        assert BIDI_KEY in json.dumps(answer.json(), ensure_ascii=False)  # JSON escapes: the same data
    elif path != "/asset/graph.svg" or client.app.state.drawer.program:
        assert "report\\u202evsc.exe" in html.unescape(answer.text)


def test_a_bidi_key_still_has_a_working_address(client: TestClient) -> None:
    page = client.get("/asset", params={"key": PLAIN}).text
    assert html.escape(asset_url(BIDI_KEY)) in page  # percent-encoded: the link leads to the real key
    assert client.get(asset_url(BIDI_KEY)).status_code == 200


# --- markup in a stored url ---------------------------------------------------------------------------

def test_markup_in_a_web_address_is_shown_as_text_never_as_markup_or_a_link(client: TestClient) -> None:
    """Fails if the templates' autoescaping is switched off (the markup is injected) or if the url
    check lets any http(s) text through (the address becomes a link)."""
    page = client.get("/asset", params={"key": MARKUP_KEY}).text
    shown = assert_nothing_injected(page)
    assert MARKUP_URL in shown  # verbatim, as text
    assert re.search(r'<dd id="url">\s*<span class="unlinked"', page), "an address with markup must not be a link"
    assert 'class="external"' not in page
