"""Public-key tokens over a real connection: a PEM key, and keys fetched from JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.server.harness import running_server


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hmac_token(claims: dict[str, object], secret: bytes) -> str:
    """An HS256 token made by hand (PyJWT rightly refuses a PEM key as an HMAC secret):
    the classic algorithm-confusion attack on servers that trust the token's header."""
    signing = _b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing, hashlib.sha256).digest()
    return (signing + b"." + _b64(signature)).decode()


async def test_es256_tokens_are_verified_with_keys_from_a_jwks_url(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, jwks_url: str
) -> None:
    claims = {"sub": "alice", "exp": int(time.time()) + 60}
    good = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "k1"})
    async with running_server(
        tmp_path, jwt_algorithm="ES256", jwt_secret="", jwt_jwks_url=jwks_url
    ) as server:
        client = await server.client()
        reply = await client.request({"type": "connect", "token": good})
        assert (reply["type"], reply["user"]) == ("connected", "alice")
        await client.close()
        forged = jwt.encode(
            claims,
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": "k1"},
        )
        client = await server.client()
        reply = await client.request({"type": "connect", "token": forged})
        assert reply["code"] == "unauthorized"
        assert (await client.wait_closed())[0] == 4001


async def test_rs256_tokens_are_verified_with_a_configured_public_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    token = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, key, algorithm="RS256")
    hs_token = hmac_token({"sub": "bob", "exp": int(time.time()) + 60}, pem.encode())
    async with running_server(
        tmp_path, jwt_algorithm="RS256", jwt_secret="", jwt_public_key=pem
    ) as server:
        client = await server.client()
        assert (await client.request({"type": "connect", "token": token}))["user"] == "bob"
        await client.close()
        # The algorithm is pinned: an HS256 token "signed" with the public key is refused.
        client = await server.client()
        reply = await client.request({"type": "connect", "token": hs_token})
        assert reply["code"] == "unauthorized"
        await client.close()
