"""Structured (JSON lines) logging, with tokens redacted wherever they might appear."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any
from urllib.parse import unquote_plus

import msgspec

# Any query parameter (`?k=v`, `&k=v`, `;k=v`): its key is URL-decoded and compared
# case-insensitively below, so `?%74oken=` or `?TOKEN=` (both read as `token` by
# servers that decode or fold keys) cannot slip a credential past the redaction.
_PARAM = re.compile(r"([?&;])([^=&;\s\"'?#]{1,64})=([^&;\s\"'#]*)")
# Credentials in an Authorization-style value; the scheme is case-insensitive (RFC 9110).
_SCHEME = re.compile(r"(?i)(\b(?:bearer|basic)\s+)[^\s\"',]+")
# A token inside a JSON frame (the websockets library logs frames at debug level).
_JSON_TOKEN = re.compile(r"(?i)(\"(?:token|access_token|authorization)\"\s*:\s*\")[^\"]*")
_SECRET_KEYS = frozenset({"token", "access_token", "authorization", "jwt"})


def _param(match: re.Match[str]) -> str:
    key = match.group(2)
    for _ in range(3):  # doubly encoded (`%2574oken`) decodes to the same key
        key = unquote_plus(key)
    key = key.strip().lower()
    if key in _SECRET_KEYS:
        return f"{match.group(1)}{match.group(2)}=[redacted]"
    return match.group(0)


def redact(text: str) -> str:
    """Replace the value of token query parameters (however their key is spelled or
    percent-encoded), of Bearer/Basic credentials, and of JSON `token` fields."""
    text = _PARAM.sub(_param, text)
    text = _SCHEME.sub(r"\1[redacted]", text)
    return _JSON_TOKEN.sub(r"\1[redacted]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                redact(a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
