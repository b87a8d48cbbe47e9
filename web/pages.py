"""The HTML pages: the asset list, an asset's page and its lineage picture as an SVG file.

Pages are rendered on the server by autoescaping Jinja2 templates; the only
markup not escaped by them is the lineage SVG, which `picture` rebuilds
from an allow-list. No page needs JavaScript.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from assetlog.query.models import AssetDetails, LineageGraph
from assetlog.query.store import LineageStore
from assetlog.visible import visible
from assetlog.web import params
from assetlog.web.picture import GraphDrawer

LIST_PAGE = 50
HISTORY_PAGE = 20
NEIGHBOUR_PAGE = 50
PICTURE_DEPTH = 2
PICTURE_LIMIT = 150
DEPTH_CHOICES = (1, 2, 3, 5, 10)


def _store(request: Request) -> LineageStore:
    return request.app.state.store


def _drawer(request: Request) -> GraphDrawer:
    return request.app.state.drawer


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = request.app.state.templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code)


def asset_list(request: Request) -> HTMLResponse:
    """`/?search=&owner=&after=`: assets in key order with their owners and health."""
    q = request.query_params
    search, owner, after = params.text(q, "search"), params.text(q, "owner"), params.text(q, "after")
    page = _store(request).search(search, owner=owner, limit=LIST_PAGE, after=after)
    return render(request, "assets.html", page=page, search=search, owner=owner, after=after)


def _lineage(request: Request) -> tuple[str, LineageGraph, int | None]:
    q = request.query_params
    key = params.key(q)
    depth = params.depth(q, PICTURE_DEPTH)
    graph = _store(request).lineage(key, direction=params.direction(q), depth=depth, limit=PICTURE_LIMIT)
    return key, graph, depth


def asset_page(request: Request) -> HTMLResponse:
    """`/asset?key=&depth=&direction=&page=`: details, metadata, lineage picture, history."""
    q = request.query_params
    key = params.key(q)
    page_number = params.whole(q, "page", 1, 1, 1_000_000) or 1
    store = _store(request)
    after = {side: params.after_key(q, f"{side}_after") for side in ("upstream", "downstream")}
    # First: an unknown key is a 404 before anything else runs. A hub's neighbours come a page at a time.
    details: AssetDetails = store.asset(key, neighbour_limit=NEIGHBOUR_PAGE, upstream_after=after["upstream"],
                                        downstream_after=after["downstream"])
    _, graph, depth = _lineage(request)
    history = store.history(key, limit=HISTORY_PAGE, offset=(page_number - 1) * HISTORY_PAGE)
    picture = _drawer(request).draw(graph)
    metadata = [(name, json.dumps(value, ensure_ascii=False, sort_keys=True))
                for name, value in (details.metadata.metadata.items() if details.metadata else ())]
    return render(request, "asset.html", d=details, graph=graph, depth=depth, direction=graph.direction,
                  depth_param="all" if depth is None else depth, picture=picture, history=history, page_number=page_number, metadata=metadata,
                  depth_choices=DEPTH_CHOICES, picture_limit=PICTURE_LIMIT,
                  neighbour_after=after, neighbour_page=NEIGHBOUR_PAGE,
                  as_json=lambda value: json.dumps(value, ensure_ascii=False, sort_keys=True))


def graph_svg(request: Request) -> Response:
    """`/asset/graph.svg?key=&depth=&direction=`: the lineage picture alone, as an SVG file."""
    _, graph, _ = _lineage(request)
    picture = _drawer(request).draw(graph, standalone=True)
    if picture.svg is None:
        return Response(picture.problem or "", status_code=503, media_type="text/plain; charset=utf-8")
    return Response(visible(picture.svg), media_type="image/svg+xml")  # as on the page: controls shown


routes = [
    Route("/", asset_list),
    Route("/asset", asset_page),
    Route("/asset/graph.svg", graph_svg),
]
