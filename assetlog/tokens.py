"""Access tokens for Assetlog's listeners: made once, stored hashed, checked on every request.

A token reads `alt_<token_id>_<secret>`: the id finds its row in
`access_tokens`, the secret is compared (in constant time) with the SHA-256
kept there. The web view checks tokens on its read-only connection; creating
and revoking needs the writer's DSN. Every listener that needs authentication
(the web view, the OpenLineage receiver) uses `TokenChecker`, so the rule
lives here once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from assetlog.errors import AssetlogError

TOKEN_PATTERN = re.compile(r"alt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
CACHE_SECONDS = 5.0  # a revoked token stops working within this long


class TokenError(AssetlogError):
    """A token command that cannot be carried out (an unknown or duplicate name)."""


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "name": self.name, "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def create_token(conn: psycopg.Connection, name: str) -> tuple[str, TokenInfo]:
    """A new token for `name`; returns the token (shown once) and its row."""
    if not name.strip() or len(name) > 200:
        raise TokenError("a token's name is 1 to 200 characters")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    try:
        with conn.transaction():
            created_at = conn.execute(
                "INSERT INTO access_tokens (token_id, name, secret_sha256) VALUES (%s, %s, %s) RETURNING created_at",
                (token_id, name, _digest(secret))).fetchone()[0]
    except psycopg.errors.UniqueViolation:
        raise TokenError(f"a token named {name!r} exists already: revoke it or choose another name") from None
    return f"alt_{token_id}_{secret}", TokenInfo(token_id, name, created_at, None)


def list_tokens(conn: psycopg.Connection) -> list[TokenInfo]:
    rows = conn.execute("SELECT token_id, name, created_at, revoked_at FROM access_tokens ORDER BY name").fetchall()
    return [TokenInfo(*row) for row in rows]


def revoke_token(conn: psycopg.Connection, name_or_id: str) -> TokenInfo:
    with conn.transaction():
        row = conn.execute(
            "UPDATE access_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE name = %s OR token_id = %s "
            "RETURNING token_id, name, created_at, revoked_at", (name_or_id, name_or_id)).fetchone()
    if row is None:
        raise TokenError(f"no token is named {name_or_id!r}: `assetlog tokens list` shows them")
    return TokenInfo(*row)


def stored_digest(conn: psycopg.Connection, token_id: str) -> bytes | None:
    """The digest of a valid (unrevoked) token's secret, None for an unknown or revoked one."""
    row = conn.execute("SELECT secret_sha256 FROM access_tokens WHERE token_id = %s AND revoked_at IS NULL",
                       (token_id,)).fetchone()
    return bytes(row[0]) if row else None


class TokenChecker:
    """Is this bearer token valid? Answers from a short cache, else from the database.

    `lookup(token_id)` returns the stored digest (see `stored_digest`); the
    caller decides which connection runs it (None: no database, only the key).
    `legacy_key` is one fixed secret also accepted (compared in constant time):
    the OpenLineage receiver's deprecated `--api-key-env`.
    """

    def __init__(self, lookup: Callable[[str], bytes | None] | None, cache_seconds: float = CACHE_SECONDS,
                 legacy_key: str | None = None) -> None:
        self._lookup = lookup
        self._cache_seconds = cache_seconds
        self._legacy_key = legacy_key.encode() if legacy_key else None
        self._valid_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, token: str) -> bool:
        if self._legacy_key is not None and hmac.compare_digest(token.strip().encode(), self._legacy_key):
            return True
        match = TOKEN_PATTERN.fullmatch(token.strip())
        if not match or self._lookup is None:
            return False
        now = time.monotonic()
        with self._lock:
            if self._valid_until.get(token, 0.0) > now:
                return True
        digest = self._lookup(match.group(1))
        valid = digest is not None and hmac.compare_digest(digest, _digest(match.group(2)))
        with self._lock:
            if valid:
                if len(self._valid_until) > 10_000:
                    self._valid_until.clear()
                self._valid_until[token] = now + self._cache_seconds
            else:
                self._valid_until.pop(token, None)
        return valid


__all__ = ["TokenChecker", "TokenError", "TokenInfo", "create_token", "list_tokens", "revoke_token",
           "stored_digest"]
