"""Tokens never reach the logs, whichever way they travel."""

from __future__ import annotations

import json
import logging

from tidings.server.logs import JsonFormatter, RedactingFilter, redact


def test_query_and_bearer_tokens_are_redacted() -> None:
    line = redact("GET /v1/ws?token=aaa.bbb.ccc&x=1 Authorization: Bearer ddd.eee.fff")
    assert "aaa" not in line
    assert "ddd" not in line
    assert "token=[redacted]&x=1" in line


def test_a_token_inside_a_logged_json_frame_is_redacted() -> None:
    line = redact('< TEXT \'{"type":"connect","id":1,"token":"eyJhbGciOi.eyJzdWIi.sig"}\'')
    assert "eyJ" not in line


def test_log_records_are_json_lines_with_arguments_redacted() -> None:
    record = logging.LogRecord(
        "tidings.test", logging.INFO, __file__, 1, "upgrade %s", ("/v1/ws?token=s3cr3t",), None
    )
    assert RedactingFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "info"
    assert entry["logger"] == "tidings.test"
    assert "s3cr3t" not in entry["msg"]
