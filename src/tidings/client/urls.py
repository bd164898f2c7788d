"""URL and JWT helpers of the SDK: where the WebSocket and the HTTP API are, and what a
token says (read only; the server verifies it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt

WS_PATH = "/v1/ws"


def ws_url_of(url: str) -> str:
    """`http://h:p` → `ws://h:p/v1/ws`; a ws(s) URL is kept (its path defaults too)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket or HTTP URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def http_url_of(ws_url: str) -> str:
    """The origin of a ws(s) URL, as http(s)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the server verifies; we only read `exp`, `sub`)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
    return claims if isinstance(claims, dict) else {}


def token_user(token: str) -> str | None:
    """The `sub` of a JWT, or None."""
    return str(token_claims(token).get("sub") or "") or None
