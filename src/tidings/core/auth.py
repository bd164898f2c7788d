"""JWT verification and issuing, with the time passed in.

PyJWT checks signatures and the audience and issuer; the time claims (`exp`, `nbf`) are
checked here against `now_s`, so that tests and the connection's expiry timer agree on
one clock. The algorithm comes from the configuration, never from the token's header
(a token cannot pick `none` or swap RS256 for HS256).

Everything is pure except `jwks_key`, which fetches a key set over the network.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import jwt

#: Algorithms `AuthConfig.algorithm` may name: HMAC with a shared secret, or public keys.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
#: RFC 7518 §3.2: an HMAC key at least as long as the hash. PyJWT warns below it; we refuse.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class AuthError(Exception):
    """A token refused; the message is fit to send to the client (no key material)."""


def check_secret(secret: str, algorithm: str = "HS256") -> None:
    """Raise `ValueError` unless `secret` is long enough to sign with `algorithm`."""
    need = MIN_SECRET_BYTES.get(algorithm, 0)
    if len(secret.encode()) < need:
        raise ValueError(f"an {algorithm} secret needs at least {need} bytes")


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """How tokens are verified: a shared secret (HS*), a public key, or a JWKS URL."""

    algorithm: str = "HS256"
    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_s: int = 0

    def __post_init__(self) -> None:
        if self.algorithm in HMAC_ALGORITHMS:
            if not self.secret:
                raise ValueError(f"{self.algorithm} needs a secret")
            check_secret(self.secret, self.algorithm)
        elif self.algorithm in PUBLIC_KEY_ALGORITHMS:
            if not (self.public_key or self.jwks_url):
                raise ValueError(f"{self.algorithm} needs a public key or a JWKS URL")
        else:
            raise ValueError(f"unsupported JWT algorithm {self.algorithm!r}")
        if self.leeway_s < 0:
            raise ValueError("leeway_s must be >= 0")

    @property
    def needs_jwks(self) -> bool:
        """True when the key must be fetched (`jwks_key`) and passed to `verify_with_key`."""
        return self.algorithm in PUBLIC_KEY_ALGORITHMS and not self.public_key


@dataclass(frozen=True)
class Claims:
    """What a verified token says: who the user is and until when (Unix seconds)."""

    user: str
    exp: int


def _int_claim(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"token claim `{name}` must be a number")
    # JSON's 1e400 decodes to inf, and NaN is accepted too: neither is a time (int()
    # of them raises), nor is a number past the 64-bit range the protocol uses.
    if isinstance(value, float) and not math.isfinite(value):
        raise AuthError(f"token claim `{name}` must be a finite number")
    if not -(2**63) <= value < 2**63:
        raise AuthError(f"token claim `{name}` is out of range")
    return int(value)


def verify_with_key(token: str, key: Any, config: AuthConfig, now_s: int) -> Claims:
    """Verify `token` with `key` (a secret, a PEM public key, or a key object from JWKS)."""
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[config.algorithm],
            audience=config.audience,
            issuer=config.issuer,
            options={
                "require": ["exp", "sub"],
                # Time claims are checked below against `now_s`, not PyJWT's clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": config.issuer is not None,
            },
        )
    except jwt.ExpiredSignatureError:  # pragma: no cover - verify_exp is off
        raise AuthError("token expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks the `{exc.claim}` claim") from None
    except jwt.InvalidAudienceError:
        raise AuthError("token audience is not accepted") from None
    except jwt.InvalidIssuerError:
        raise AuthError("token issuer is not accepted") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError(f"token is not signed with {config.algorithm}") from None
    except jwt.InvalidSignatureError:
        raise AuthError("token signature is invalid") from None
    except jwt.DecodeError:
        raise AuthError("token is malformed") from None
    except jwt.InvalidKeyError:
        raise AuthError("token cannot be verified with the configured key") from None
    except jwt.InvalidTokenError:
        raise AuthError("token is invalid") from None
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("token claim `sub` must be a non-empty string")
    exp = _int_claim(payload, "exp")
    assert exp is not None  # required above
    if now_s >= exp + config.leeway_s:
        raise AuthError("token expired")
    nbf = _int_claim(payload, "nbf")
    if nbf is not None and now_s + config.leeway_s < nbf:
        raise AuthError("token is not valid yet")
    return Claims(user=sub, exp=exp)


def verify(token: str, config: AuthConfig, *, now_s: int) -> Claims:
    """Verify `token` with the configured secret or public key; raise `AuthError`.

    With a JWKS URL and no fixed public key, resolve the key first (`token_kid`,
    `jwks_key`) and call `verify_with_key`.
    """
    if not token:
        raise AuthError("no token")
    if config.algorithm in HMAC_ALGORITHMS:
        key: str | None = config.secret
    else:
        key = config.public_key
    if key is None:
        raise AuthError("token keys are fetched from JWKS: use verify_with_key")
    return verify_with_key(token, key, config, now_s)


def token_kid(token: str) -> str | None:
    """The `kid` of the token's (unverified) header, naming the JWKS key to verify with."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise AuthError("token is malformed") from None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def issue(
    user: str,
    *,
    secret: str,
    ttl_s: int,
    now_s: int,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A signed token for `user`, valid `ttl_s` seconds from `now_s`."""
    if not user:
        raise ValueError("user must not be empty")
    check_secret(secret, algorithm)
    claims: dict[str, Any] = {"sub": user, "iat": now_s, "exp": now_s + ttl_s}
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)


# ---------------------------------------------------------------- I/O: JWKS fetching


@functools.lru_cache(maxsize=8)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    # One client per URL: it caches the key set between calls.
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)


def jwks_key(token: str, url: str) -> Any:
    """I/O, BLOCKING: fetch (or reuse the cached) key set at `url`, return the token's key.

    Call it off the event loop (`asyncio.to_thread`), then `verify_with_key`.
    """
    try:
        return _jwks_client(url).get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError:
        raise AuthError("token keys are unavailable") from None
    except (jwt.PyJWKClientError, jwt.InvalidTokenError):
        raise AuthError("token key is unknown") from None
