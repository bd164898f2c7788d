from __future__ import annotations

import base64
import hashlib
import hmac
import json
from http.server import ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import JwksHandler
from tidings.core.auth import (
    AuthConfig,
    AuthError,
    Claims,
    issue,
    jwks_key,
    token_kid,
    verify,
    verify_with_key,
)

SECRET = "s3cret-key-of-at-least-32-bytes-long!"
NOW = 1_764_125_000
HS = AuthConfig(secret=SECRET)


def sign(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256", **kw: Any) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, **kw)


def refusal(token: str, config: AuthConfig = HS, now_s: int = NOW) -> str:
    with pytest.raises(AuthError) as info:
        verify(token, config, now_s=now_s)
    return str(info.value)


# ---------------------------------------------------------------- HS256


def test_an_issued_token_verifies_to_its_user_and_expiry() -> None:
    token = issue("alice", secret=SECRET, ttl_s=60, now_s=NOW)
    assert verify(token, HS, now_s=NOW) == Claims(user="alice", exp=NOW + 60)


def test_a_token_is_valid_until_its_exp_and_expired_at_it() -> None:
    token = issue("alice", secret=SECRET, ttl_s=60, now_s=NOW)
    assert verify(token, HS, now_s=NOW + 59).user == "alice"
    assert refusal(token, now_s=NOW + 60) == "token expired"


def test_leeway_extends_the_expiry() -> None:
    token = issue("alice", secret=SECRET, ttl_s=60, now_s=NOW)
    config = AuthConfig(secret=SECRET, leeway_s=5)
    assert verify(token, config, now_s=NOW + 64).user == "alice"
    assert refusal(token, config, now_s=NOW + 65) == "token expired"


def test_the_time_comes_from_the_caller_not_the_clock() -> None:
    # Long expired by the wall clock, valid at the given time.
    token = issue("alice", secret=SECRET, ttl_s=60, now_s=1_000)
    assert verify(token, HS, now_s=1_000).user == "alice"


def test_a_token_not_valid_yet_is_refused() -> None:
    token = sign({"sub": "alice", "exp": NOW + 100, "nbf": NOW + 10})
    assert refusal(token) == "token is not valid yet"
    assert verify(token, HS, now_s=NOW + 10).user == "alice"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = issue("alice", secret="another-secret-of-at-least-32-bytes", ttl_s=60, now_s=NOW)
    assert refusal(token) == "token signature is invalid"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"sub": "alice"}, "token lacks the `exp` claim"),
        ({"exp": NOW + 60}, "token lacks the `sub` claim"),
        ({"sub": "", "exp": NOW + 60}, "token claim `sub` must be a non-empty string"),
        ({"sub": "alice", "exp": "tomorrow"}, "token claim `exp` must be a number"),
        ({"sub": "alice", "exp": True}, "token claim `exp` must be a number"),
    ],
)
def test_a_token_without_valid_sub_and_exp_is_refused(claims: dict[str, Any], message: str) -> None:
    assert refusal(sign(claims)) == message


def test_a_non_string_subject_is_refused() -> None:
    assert refusal(sign({"sub": 42, "exp": NOW + 60})) in {
        "token is invalid",
        "token claim `sub` must be a non-empty string",
    }


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "e30.e30."])
def test_malformed_tokens_are_refused(token: str) -> None:
    # "e30.e30." is `{}.{}.`: a header without `alg`, so not signed with HS256.
    assert refusal(token) in {"no token", "token is malformed", "token is not signed with HS256"}


def test_the_algorithm_is_pinned_by_the_configuration() -> None:
    unsigned = sign({"sub": "mallory", "exp": NOW + 60}, key=None, algorithm="none")
    assert refusal(unsigned) == "token is not signed with HS256"
    hs512 = sign({"sub": "mallory", "exp": NOW + 60}, key=SECRET * 2, algorithm="HS512")
    assert refusal(hs512) == "token is not signed with HS256"


def test_audience_and_issuer_are_checked_when_configured() -> None:
    config = AuthConfig(secret=SECRET, audience="tidings", issuer="https://idp")
    good = issue(
        "alice", secret=SECRET, ttl_s=60, now_s=NOW, audience="tidings", issuer="https://idp"
    )
    assert verify(good, config, now_s=NOW).user == "alice"
    wrong_aud = issue(
        "alice", secret=SECRET, ttl_s=60, now_s=NOW, audience="other", issuer="https://idp"
    )
    assert refusal(wrong_aud, config) == "token audience is not accepted"
    wrong_iss = issue(
        "alice", secret=SECRET, ttl_s=60, now_s=NOW, audience="tidings", issuer="https://evil"
    )
    assert refusal(wrong_iss, config) == "token issuer is not accepted"
    no_audience = issue("alice", secret=SECRET, ttl_s=60, now_s=NOW, issuer="https://idp")
    assert refusal(no_audience, config) == "token lacks the `aud` claim"


def test_a_token_meant_for_an_audience_is_refused_when_none_is_configured() -> None:
    token = issue("alice", secret=SECRET, ttl_s=60, now_s=NOW, audience="elsewhere")
    assert refusal(token) == "token audience is not accepted"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"algorithm": "HS256", "secret": ""},
        {"algorithm": "HS256", "secret": "short"},
        {"algorithm": "HS512", "secret": SECRET},
        {"algorithm": "RS256"},
        {"algorithm": "none", "secret": "x"},
        {"secret": "x", "leeway_s": -1},
    ],
)
def test_an_unusable_configuration_is_refused_at_once(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        AuthConfig(**kwargs)


# ---------------------------------------------------------------- public keys


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_an_es256_token_verifies_with_the_configured_public_key(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    config = AuthConfig(algorithm="ES256", public_key=public_pem(ec_key))
    token = sign({"sub": "alice", "exp": NOW + 60}, key=ec_key, algorithm="ES256")
    assert verify(token, config, now_s=NOW) == Claims(user="alice", exp=NOW + 60)


def hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    # PyJWT refuses to sign with a PEM key as an HMAC secret, so forge it by hand.
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


def test_a_public_key_cannot_be_used_as_an_hmac_secret(ec_key: ec.EllipticCurvePrivateKey) -> None:
    # The classic confusion attack: sign HS256 with the public key's text.
    pem = public_pem(ec_key)
    config = AuthConfig(algorithm="ES256", public_key=pem)
    forged = hs256_by_hand({"sub": "mallory", "exp": NOW + 60}, pem.encode())
    assert refusal(forged, config) == "token is not signed with ES256"


def test_issuing_with_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        issue("alice", secret="short", ttl_s=60, now_s=NOW)


def test_the_kid_of_a_token_names_its_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    token = sign({"sub": "a", "exp": NOW + 1}, key=ec_key, algorithm="ES256", headers={"kid": "k1"})
    assert token_kid(token) == "k1"
    assert token_kid(issue("a", secret=SECRET, ttl_s=1, now_s=NOW)) is None
    with pytest.raises(AuthError, match="malformed"):
        token_kid("nonsense")


def test_a_jwks_configuration_needs_the_key_resolved_first(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    config = AuthConfig(algorithm="ES256", jwks_url="http://127.0.0.1:1/jwks")
    assert config.needs_jwks
    token = sign({"sub": "alice", "exp": NOW + 60}, key=ec_key, algorithm="ES256")
    assert "verify_with_key" in refusal(token, config)
    assert verify_with_key(token, ec_key.public_key(), config, NOW).user == "alice"


def test_a_jwks_key_is_fetched_by_kid_and_verifies_the_token(
    ec_key: ec.EllipticCurvePrivateKey, jwks_url: str
) -> None:
    config = AuthConfig(algorithm="ES256", jwks_url=jwks_url)
    token = sign(
        {"sub": "alice", "exp": NOW + 60}, key=ec_key, algorithm="ES256", headers={"kid": "k1"}
    )
    key = jwks_key(token, jwks_url)
    assert verify_with_key(token, key, config, NOW).user == "alice"
    unknown = sign(
        {"sub": "a", "exp": NOW + 60}, key=ec_key, algorithm="ES256", headers={"kid": "k9"}
    )
    with pytest.raises(AuthError, match="unknown"):
        jwks_key(unknown, jwks_url)


def test_an_unreachable_jwks_url_is_reported_as_unavailable(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler) as closed:
        port = closed.server_address[1]
    token = sign(
        {"sub": "a", "exp": NOW + 60}, key=ec_key, algorithm="ES256", headers={"kid": "k1"}
    )
    with pytest.raises(AuthError, match="unavailable"):
        jwks_key(token, f"http://127.0.0.1:{port}/jwks")
