"""Structured (JSON lines) logging, with tokens redacted wherever they might appear."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import msgspec

_TOKEN = re.compile(r"((?:[?&]token=)|(?:[Bb]earer\s+))[^&\s\"']+")
# A token inside a JSON frame (the websockets library logs frames at debug level).
_JSON_TOKEN = re.compile(r"(\"token\"\s*:\s*\")[^\"]*")


def redact(text: str) -> str:
    """Replace the value of `token=` query parameters and Bearer credentials."""
    return _JSON_TOKEN.sub(r"\1[redacted]", _TOKEN.sub(r"\1[redacted]", text))


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
