"""Query parameters of the web view, read strictly: anything malformed is a 400 that says what to send.

Keys are URIs full of `/`, `:` and `+`, so they travel as a query parameter
(`/asset?key=...`), never in the path; the same names serve the HTML pages
and their JSON twins under `/api/`.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from starlette.datastructures import QueryParams

from assetlog.query.catalog import parse_cursor
from assetlog.query.models import Direction
from assetlog.query.timeparse import parse_time

MAX_DEPTH = 100
DIRECTIONS: tuple[Direction, ...] = ("both", "upstream", "downstream")


class BadRequest(Exception):
    """A parameter the client must fix; the message is shown to it as is (status 400)."""


def _get(params: QueryParams, name: str) -> str | None:
    """The raw value of one parameter; a NUL character (`%00`) in it is a 400, never a database error.

    PostgreSQL text cannot hold NUL, and no key, name or time can contain one.
    """
    value = params.get(name)
    if value is not None and "\x00" in value:
        raise BadRequest(f"{name} must not contain a NUL character (%00)")
    return value


def key(params: QueryParams) -> str:
    value = _get(params, "key")
    if not value:
        raise BadRequest("the key parameter is required, e.g. ?key=s3://bucket/folder/asset.csv")
    return value


def after_key(params: QueryParams, name: str) -> str | None:
    """An optional asset key a list continues after, verbatim (keys are exact); empty means absent."""
    return _get(params, name) or None


def text(params: QueryParams, name: str) -> str | None:
    """An optional free-text parameter; blank means absent (an empty search box)."""
    value = (_get(params, name) or "").strip()
    return value or None


def whole(params: QueryParams, name: str, default: int | None, lowest: int, highest: int) -> int | None:
    """An optional whole number in [lowest, highest]; blank means the default."""
    raw = (_get(params, name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number from {lowest} to {highest}, not {raw!r}") from None
    if not lowest <= value <= highest:
        raise BadRequest(f"{name} must be a whole number from {lowest} to {highest}, not {value}")
    return value


def depth(params: QueryParams, default: int | None) -> int | None:
    """Hops to walk: 1..MAX_DEPTH, or `all` (no hop limit; the node limit still holds)."""
    if (_get(params, "depth") or "").strip().lower() == "all":
        return None
    return whole(params, "depth", default, 1, MAX_DEPTH)


def direction(params: QueryParams, default: Direction = "both") -> Direction:
    value = (_get(params, "direction") or "").strip() or default
    if value not in DIRECTIONS:
        raise BadRequest(f"direction must be one of {', '.join(DIRECTIONS)}, not {value!r}")
    return cast(Direction, value)


def as_of(params: QueryParams) -> datetime | None:
    raw = text(params, "as_of")
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise BadRequest(f"as_of: {exc}") from None


def cursor(params: QueryParams) -> str | None:
    raw = text(params, "before")
    if raw is None:
        return None
    try:
        parse_cursor(raw)
    except ValueError as exc:
        raise BadRequest(f"before: {exc}") from None
    return raw
