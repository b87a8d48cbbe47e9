"""The web view's own URLs, and which stored URLs may become links.

Asset keys go into the query string, percent-encoded except for `/` and `:`
(which a query may hold as they are, and which keep addresses readable), so
every valid key, `+`, `=`, `;` and all, has a working address. A stored `url` is the
workflow author's free text: only absolute http(s) addresses become links;
anything else (`javascript:`, `data:`, relative paths, markup) is shown as text.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

# No whitespace or control characters anywhere (browsers strip them and would see another scheme),
# and none of the characters RFC 3986 never allows unencoded that markup is made of (quote, <, >, `, backslash):
# an address carrying markup is shown as text, whether or not the template escapes it.
_WEB_ADDRESS = re.compile(r"https?://[^\s\x00-\x1f\x7f\"<>`\\]+", re.IGNORECASE)


def _query(path: str, params: dict[str, object]) -> str:
    kept = {name: value for name, value in params.items() if value is not None and value != ""}
    return f"{path}?{urlencode(kept, quote_via=quote, safe='/:')}" if kept else path


def asset_url(key: str, **params: object) -> str:
    """The asset's page (`depth`, `direction`, `page` optional)."""
    return _query("/asset", {"key": key, **params})


def list_url(**params: object) -> str:
    """The asset list (`search`, `owner`, `after` optional)."""
    return _query("/", params)


def api_url(path: str, **params: object) -> str:
    return _query(f"/api/{path}", params)


def graph_url(key: str, **params: object) -> str:
    """The lineage picture as an SVG file of its own."""
    return _query("/asset/graph.svg", {"key": key, **params})


def web_link(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) address that is safe as an href, else None (show it as text)."""
    if url and _WEB_ADDRESS.fullmatch(url):
        return url
    return None
