"""Issue 9 point 11: tokens never reach the logs, however the request spells them."""

from __future__ import annotations

import logging

import pytest

from tidings.server.logs import JsonFormatter, RedactingFilter, redact

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "line",
    [
        f"GET /v1/sse?%74oken={TOKEN}&after=3 HTTP/1.1",
        f"GET /v1/sse?%2574oken={TOKEN} HTTP/1.1",
        f"GET /v1/ws?TOKEN={TOKEN} HTTP/1.1",
        f"GET /v1/ws?x=1&ToKeN={TOKEN}",
        f"GET /v1/ws?access_token={TOKEN}",
        f"Authorization: BEARER {TOKEN}",
        f"authorization: bearer\t{TOKEN}",
        f'< TEXT \'{{"type":"connect","TOKEN":"{TOKEN}"}}\'',
    ],
)
def test_a_token_is_redacted_whatever_its_case_or_percent_encoding(line: str) -> None:
    assert TOKEN not in redact(line)
    assert "[redacted]" in redact(line)


def test_other_query_parameters_are_kept_as_they_are() -> None:
    assert redact("GET /v1/sessions/s/events?after=3&limit=10") == (
        "GET /v1/sessions/s/events?after=3&limit=10"
    )


def test_a_debug_record_with_an_uppercase_bearer_argument_is_redacted() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.DEBUG, __file__, 1, "headers %s", (f"BEARER {TOKEN}",), None
    )
    assert RedactingFilter().filter(record)
    assert TOKEN not in JsonFormatter().format(record)
