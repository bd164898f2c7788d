"""schemathesis against the server's own OpenAPI document, over a real socket, with a
valid token: no request the schema admits may make the server fail (5xx).

Stateless: each operation is tried with generated parameters and bodies, and again with
`session_id` set to a session the token's user owns, so the generated values reach past
the membership check. The document is the app's own (`app.openapi()`, what
`/openapi.json` serves), read at collection so that every operation is a test case of
its own; a test checks that the live server serves the same document. Response-schema
conformance is not asserted yet: the routes' response models are issue 16's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from tests.security.attacks import ThreadedServer, known_hole
from tests.server.harness import make_token
from tidings.server.app import create_app
from tidings.server.config import Config


def _openapi() -> dict[str, Any]:
    db = Path(tempfile.gettempdir()) / "tidings-openapi-unused.db"
    document: dict[str, Any] = create_app(
        Config(database_url=f"sqlite:///{db}", jwt_secret="x" * 32)
    ).openapi()
    return document


DOCUMENT = _openapi()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)


def _operations() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for result in SCHEMA.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"schemathesis cannot read an operation: {result.err()}")
        found[result.ok().label] = result.ok()
    return found


OPERATIONS = _operations()
#: An accepted SSE stream never ends, so each example would last its whole timeout; the
#: route's refusals are covered by the matrix and token tests.
STREAMING = {"GET /v1/sessions/{session_id}/sse"}
FUZZED = sorted(set(OPERATIONS) - STREAMING)

DEFAULT = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
LARGE = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    # No rate limit: the generator sends hundreds of requests a second by design.
    server = ThreadedServer(tmp_path_factory.mktemp("schemathesis"), rate_limit=0)
    try:
        yield server
    finally:
        server.close()


def test_the_live_server_serves_the_document_under_test(api: ThreadedServer) -> None:
    served = httpx.get(f"{api.server.http_url}/openapi.json", timeout=10).json()
    assert served == DOCUMENT
    assert len(OPERATIONS) >= 10


def _fuzz(api: ThreadedServer, label: str, config: settings) -> None:
    operation = OPERATIONS[label]
    base_url = api.server.http_url
    headers = {"Authorization": f"Bearer {make_token('fuzzer')}"}

    @config
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case[Any]) -> None:
        if case.query and "wait" in case.query:
            # A long-poll may wait 60 s by the schema; a short wait takes the same path.
            case.query["wait"] = 0.01
        case.call_and_validate(
            base_url=base_url, headers=headers, checks=[not_a_server_error], timeout=10
        )
        if case.path_parameters and "session_id" in case.path_parameters:
            case.path_parameters["session_id"] = api.session
            case.call_and_validate(
                base_url=base_url, headers=headers, checks=[not_a_server_error], timeout=10
            )

    run()


def _cases() -> list[Any]:
    return [pytest.param(label, marks=known_hole(f"schemathesis {label}")) for label in FUZZED]


@pytest.mark.parametrize("label", _cases())
def test_no_generated_request_makes_the_server_fail(api: ThreadedServer, label: str) -> None:
    _fuzz(api, label, DEFAULT)


@pytest.mark.slow
@pytest.mark.parametrize("label", _cases())
def test_many_generated_requests_never_make_the_server_fail(
    api: ThreadedServer, label: str
) -> None:
    _fuzz(api, label, LARGE)
