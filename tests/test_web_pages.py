"""The HTML pages on the real PostgreSQL: list, search, owners, health, asset details, history pages, the
lineage picture laid out by Graphviz (clickable nodes), and hostile text shown as text, never run."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from events_factory import DASHBOARD, GOLD, LOOKUP, PROCESSED, SILVER
from starlette.testclient import TestClient
from web_support import (  # noqa: F401 - fixtures `world`, `store`
    HOSTILE,
    HOSTILE_PROPS,
    HOSTILE_TEXTS,
    HOSTILE_UPSTREAM,
    RAW_KEY,
    SPECIAL,
    assert_nothing_injected,
    ensure_programs,
    web_store_fixture,
    web_world_fixture,
)

from assetlog.query.render import dot
from assetlog.query.store import LineageStore
from assetlog.web import GraphDrawer, create_app
from assetlog.web.urls import asset_url, web_link

SVG = "{http://www.w3.org/2000/svg}"  # the namespace of the SVG file; the inline SVG is HTML, without one


@pytest.fixture(scope="module")
def client(store: LineageStore) -> Iterator[TestClient]:
    [dot] = ensure_programs(["dot"], ["graphviz"])
    with TestClient(create_app(store, drawer=GraphDrawer(asset_url, dot)),
                    raise_server_exceptions=False) as test_client:
        yield test_client


def page(client: TestClient, path: str, status: int = 200, **params: str) -> str:
    answer = client.get(path, params=params)
    assert answer.status_code == status, answer.text[:2000]
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "Traceback" not in answer.text
    return answer.text


def row_of(text: str, key: str) -> str:
    """The list's table row linking to `key`."""
    rows = [row for row in re.findall(r"<tr>.*?</tr>", text, re.S) if f'href="{html.escape(asset_url(key))}"' in row]
    assert len(rows) == 1, f"{len(rows)} rows for {key}"
    return rows[0]


def keys_listed(text: str) -> list[str]:
    return [html.unescape(k) for k in re.findall(r'<a class="asset-key" href="[^"]*"><code>([^<]*)</code>', text)]


def picture(text: str) -> ET.Element:
    """The inline lineage SVG of a page, parsed as XML (it must be well-formed)."""
    found = re.search(r'<div class="picture" id="picture">(<svg .*?</svg>)</div>', text, re.S)
    assert found, "no lineage picture on the page"
    return ET.fromstring(found.group(1))


def test_list_rows_show_name_key_owners_and_health(client: TestClient) -> None:
    text = page(client, "/")
    processed = row_of(text, PROCESSED)
    assert ">Processed Customer Data</a>" in processed and 'class="health ok"' in processed
    assert [html.unescape(o) for o in re.findall(r'class="owner" href="[^"]*">([^<]*)<', processed)] == \
        ["data-team@company.com", "alice@company.com"]
    assert 'class="health failed"' in row_of(text, GOLD)  # its last materialization failed
    assert 'class="health unknown"' in row_of(text, LOOKUP)  # only ever referenced as an upstream
    assert ">never materialized<" in row_of(text, LOOKUP)


def test_list_search_owner_filter_and_next_page(client: TestClient, store: LineageStore) -> None:
    found = keys_listed(page(client, "/", search="customer"))
    assert PROCESSED in found and DASHBOARD not in found
    owned = page(client, "/", owner="bi-team")
    assert keys_listed(owned) == [DASHBOARD] and "owned by <q>bi-team</q>" in owned
    first = page(client, "/")
    assert len(keys_listed(first)) == 50
    after = re.search(r'<a rel="next" href="/\?after=([^"]*)">Next page</a>', first)
    assert after, "no link to the next page"
    rest = keys_listed(page(client, "/", after=unquote(html.unescape(after.group(1)))))
    assert keys_listed(first) + rest == [a.key for a in store.search(limit=1000).assets]


def test_asset_page_shows_properties_link_metadata_and_history(client: TestClient) -> None:
    text = page(client, "/asset", key=PROCESSED)
    assert '<h1 id="asset-name">Processed Customer Data</h1>' in text
    assert f'<code id="asset-key">{PROCESSED}</code>' in text
    assert "Clean customer data with PII removed" in text
    owners = re.search(r'<dd id="owners">(.*?)</dd>', text, re.S)
    assert owners and re.findall(r">([^<]+)</a>", owners.group(1)) == ["data-team@company.com", "alice@company.com"]
    assert ('<a class="external" href="https://dashboard.company.com/datasets/customer-data" '
            'rel="noopener noreferrer nofollow" target="_blank">') in text
    assert "<code>record_count</code></th><td><code>1500</code>" in text
    assert "succeeded at 2025-01-01T00:00:20Z" in text and "<code>transform</code>" in text


def test_history_is_paginated(client: TestClient) -> None:
    first = page(client, "/asset", key=HOSTILE)
    history = first[first.index('id="history"'):]
    assert history.count('<td class="time">') == 20 and 'class="health failed"' in history
    assert ">Older</a>" in history and ">Newer</a>" not in history
    second = page(client, "/asset", key=HOSTILE, page="2")
    history = second[second.index('id="history"'):]
    assert history.count('<td class="time">') == 7 and ">Newer</a>" in history and ">Older</a>" not in history
    assert "No more materializations." in page(client, "/asset", key=HOSTILE, page="9")


def neighbour_keys(text: str, side: str) -> list[str]:
    listed = re.search(rf'<ul id="{side}">(.*?)</ul>', text, re.S)
    assert listed, f"no {side} list"
    return [html.unescape(k) for k in re.findall(r'<a href="[^"]*"><code>([^<]*)</code></a>', listed.group(1))]


def test_a_hubs_neighbours_come_a_page_at_a_time(client: TestClient, store: LineageStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from query_world import HUB, HUB_DEPENDANTS

    from assetlog.web import pages

    monkeypatch.setattr(pages, "NEIGHBOUR_PAGE", 12)  # the hub of the test world has 30 dependants
    text = page(client, "/asset", key=HUB)
    assert "<h3>Downstream (30)</h3>" in text and "… and 18 more" in text
    shown = neighbour_keys(text, "downstream")
    for _ in range(3):
        nav = re.search(r'<nav class="pager" id="downstream-pages">(.*?)</nav>', text, re.S)
        if not nav or "next 12" not in nav.group(1):
            break
        link = html.unescape(re.findall(r'href="([^"]*)">next 12<', nav.group(1))[0])
        answer = client.get(link)
        assert answer.status_code == 200
        text = answer.text
        assert "<h3>Downstream (30)</h3>" in text and ">first 12</a>" in text
        shown += neighbour_keys(text, "downstream")
    assert shown == sorted(HUB_DEPENDANTS)
    assert store.asset(HUB, neighbour_limit=5, downstream_after=HUB_DEPENDANTS[27]).downstream_count == 30
    assert [n.key for n in store.asset(HUB, neighbour_limit=5, downstream_after=HUB_DEPENDANTS[27]).downstream] == \
        HUB_DEPENDANTS[28:]


def test_lineage_picture_is_laid_out_by_graphviz_with_a_link_per_node(client: TestClient,
                                                                     store: LineageStore) -> None:
    svg = picture(page(client, "/asset", key=SILVER))
    assert svg.get("class") == "lineage" and not any(e.get("id") for e in svg.iter())
    nodes = {g.get("data-key"): g for g in svg.iter("g") if "node" in (g.get("class") or "").split()}
    assert set(nodes) == {n.key for n in store.lineage(SILVER, depth=2).nodes}
    for key, node in nodes.items():
        link = node.find("a")
        assert link is not None and link.get("href") == asset_url(key)
        assert link.find("title").text == key  # type: ignore[union-attr]
        assert link.find("polygon").get("points")  # type: ignore[union-attr]  # placed by Graphviz
    assert nodes[SILVER].get("class") == "node ok root" and nodes[GOLD].get("class") == "node failed"
    assert nodes[LOOKUP].get("class") == "node unknown"
    edges = [g for g in svg.iter("g") if g.get("class") == "edge"]
    assert len(edges) == len(store.lineage(SILVER, depth=2).edges)


def test_a_picture_is_laid_out_once_until_what_it_shows_changes(store: LineageStore) -> None:
    """Graphviz runs once per picture: a hub's page does not pay 40-60 ms of layout at every view.
    The key is everything drawn: a node's health shows as a class the DOT does not carry."""
    [program] = ensure_programs(["dot"], ["graphviz"])
    drawer = GraphDrawer(asset_url, program)
    graph = store.lineage(SILVER, depth=2)
    first = drawer.draw(graph)
    assert drawer.draw(graph) == first and drawer.layouts == 1
    succeeded = graph.model_copy(update={"nodes": [
        node.model_copy(update={"last_status": "SUCCEEDED"}) if node.key == LOOKUP else node for node in graph.nodes]})
    assert dot(succeeded) == dot(graph)  # the DOT alone would not tell them apart
    again = drawer.draw(succeeded)
    assert drawer.layouts == 2 and again.svg is not None and first.svg is not None
    looks = {svg: {g.get("data-key"): g.get("class") for g in ET.fromstring(svg).iter("g") if g.get("data-key")}
             for svg in (first.svg, again.svg)}
    assert looks[first.svg][LOOKUP] == "node unknown" and looks[again.svg][LOOKUP] == "node ok"
    assert drawer.draw(graph, standalone=True).svg != first.svg and drawer.layouts == 3
    assert drawer.draw(store.lineage(SILVER, depth=1)).svg != first.svg and drawer.layouts == 4


def test_depth_and_direction_choose_the_picture(client: TestClient) -> None:
    def drawn(**params: str) -> set[str]:
        svg = picture(page(client, "/asset", key=DASHBOARD, **params))
        return {g.get("data-key") for g in svg.iter("g") if g.get("data-key")}

    assert drawn(depth="1", direction="upstream") == {DASHBOARD, GOLD}
    assert drawn(depth="all", direction="upstream") == {DASHBOARD, GOLD, SILVER, LOOKUP,
                                                        "s3://lake/bronze/orders.parquet"}
    assert drawn(depth="3", direction="downstream") == {DASHBOARD}
    text = page(client, "/asset", key=DASHBOARD, depth="7")
    assert '<option value="7" selected>7 hops</option>' in text
    assert "depth must be a whole number" in page(client, "/asset", 400, key=DASHBOARD, depth="-1")


def test_the_picture_as_an_svg_file(client: TestClient) -> None:
    answer = client.get("/asset/graph.svg", params={"key": HOSTILE, "depth": "all"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/svg+xml"
    svg = ET.fromstring(answer.text)
    assert svg.tag == f"{SVG}svg"
    keys = {g.get("data-key") for g in svg.iter(f"{SVG}g") if g.get("data-key")}
    assert SPECIAL in keys and HOSTILE in keys and RAW_KEY in keys
    assert client.get("/asset/graph.svg", params={"key": "s3://nowhere/x.csv"}).status_code == 404


def test_without_graphviz_the_page_works_and_says_what_is_missing(store: LineageStore) -> None:
    with TestClient(create_app(store, drawer=GraphDrawer(asset_url, None))) as no_dot:
        text = page(no_dot, "/asset", key=SILVER)
        assert "needs Graphviz" in text and "apt-get install graphviz" in text and "<svg" not in text
        assert f'<a href="{asset_url(GOLD)}"><code>{GOLD}</code></a>' in text  # the neighbour lists remain
        assert no_dot.get("/asset/graph.svg", params={"key": SILVER}).status_code == 503


def test_a_failing_graphviz_is_reported_not_raised(store: LineageStore) -> None:
    with TestClient(create_app(store, drawer=GraphDrawer(asset_url, "/bin/false"))) as broken:
        assert "Graphviz could not draw this graph" in page(broken, "/asset", key=SILVER)


def test_unknown_keys_and_addresses_are_404_pages(client: TestClient) -> None:
    text = page(client, "/asset", 404, key="s3://nowhere/missing.csv")
    assert "<h1>Not found</h1>" in text and "no asset &#39;s3://nowhere/missing.csv&#39;" in text
    assert "the key parameter is required" in page(client, "/asset", 400)
    assert "no page at /nothing" in page(client, "/nothing", 404)


# --- escaping ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, params", [
    ("/", {}),
    ("/", {"search": "hostile"}),
    ("/", {"owner": HOSTILE_PROPS["owners"][0]}),
    ("/asset", {"key": HOSTILE}),
    ("/asset", {"key": HOSTILE, "page": "2"}),
    ("/asset", {"key": HOSTILE_UPSTREAM}),
    ("/asset", {"key": RAW_KEY}),
    ("/", {"search": "\"><script>alert('search')</script>"}),
    ("/asset", {"key": "\"><img src=x onerror=alert('missing')>"}),
])
def test_hostile_text_is_shown_as_text(client: TestClient, path: str, params: dict[str, str]) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code in (200, 404)
    shown = assert_nothing_injected(answer.text)
    for value in params.values():
        if value != "2":
            assert value in shown or repr(value) in shown  # what was asked for is echoed, as text


def test_hostile_properties_metadata_and_errors_appear_verbatim(client: TestClient) -> None:
    shown = assert_nothing_injected(page(client, "/asset", key=HOSTILE))
    for text in HOSTILE_TEXTS:
        assert text in shown or text in html.unescape(shown), text
    text = page(client, "/asset", key=HOSTILE)
    assert re.search(r'<dd id="url">\s*<span class="unlinked"', text), "a javascript: url must not be a link"
    upstream = page(client, "/asset", key=HOSTILE_UPSTREAM)
    assert re.search(r'<dd id="url">\s*<span class="unlinked"', upstream)
    svg = picture(text)  # names inside the SVG are text nodes, not markup
    labels = [t.text for t in svg.iter("text")]
    assert HOSTILE_PROPS["name"] in labels and "</text></svg><script>alert('svg')</script>" in labels
    assert RAW_KEY in [g.get("data-key") for g in svg.iter("g")]
    assert {e.tag for e in svg.iter()} <= {"svg", "g", "a", "title", "polygon", "path", "ellipse", "polyline", "text"}


@pytest.mark.parametrize("url, link", [
    ("https://dashboard.company.com/x?a=1&b=2", True),
    ("HTTP://example.com", True),
    ("javascript:alert(1)", False),
    (" javascript:alert(1)", False),
    ("java\tscript:alert(1)", False),
    ("https://example.com/\njavascript:alert(1)", False),
    ("data:text/html,<script>alert(1)</script>", False),
    ("//evil.example.com", False),
    ("/relative/path", False),
    ("ftp://files.example.com", False),
    ("", False),
])
def test_only_absolute_web_addresses_become_links(url: str, link: bool) -> None:
    assert (web_link(url) == url) is link
