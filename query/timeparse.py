"""Reading the times users type (`--as-of`, history cursors) as aware UTC datetimes.

Event times are UTC, so a time typed without an offset means UTC rather than
the machine's local zone (which would make the same command answer differently
on two machines).
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(text: str) -> datetime:
    """ISO-8601 (`2026-11-20T10:00:00Z`, `2026-11-20 10:00+01:00`, `2026-11-20`) -> aware datetime.

    A missing offset means UTC; a bare date means its midnight UTC.
    Raises ValueError naming the accepted forms.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO-8601 time; use e.g. 2026-11-20T10:00:00Z or 2026-11-20"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def require_aware(value: datetime) -> datetime:
    """API callers pass datetimes: refuse naive ones instead of guessing their zone; answer in UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"as_of must be timezone-aware (e.g. datetime(..., tzinfo=UTC)), got {value!r}")
    return value.astimezone(UTC)
