"""Fixtures shared across the test folders."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class JwksHandler(BaseHTTPRequestHandler):
    """Serves `body` (a JWKS document) to every GET."""

    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_url(ec_key: ec.EllipticCurvePrivateKey) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="ES256")
    handler = type("Handler", (JwksHandler,), {"body": json.dumps({"keys": [jwk]}).encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


POSTGRES_URL = os.environ.get(
    "TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A DSN whose `search_path` is a new, empty schema, dropped afterwards. Skips (fails
    under CI=true) when PostgreSQL is not reachable."""
    url = POSTGRES_URL
    try:
        admin = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL is not reachable at {url}: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"tidings_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield _with_search_path(url, schema)
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def postgres_dsn() -> AsyncIterator[str]:
    """A DSN whose `search_path` is a new, empty schema, dropped after the test."""
    async with postgres_schema() as dsn:
        yield dsn
