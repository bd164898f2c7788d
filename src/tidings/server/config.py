"""Run-time settings, read from `TIDINGS_*` environment variables (each also a `serve` flag)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True, kw_only=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    database_url: str = "sqlite:///tidings.db"
    redis_url: str | None = None
    jwt_secret: str = ""
    jwt_algorithm: str = "HS256"
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: Browser origins allowed to open WebSockets; same-origin and no Origin always are.
    allowed_origins: tuple[str, ...] = ()
    #: Host names (or host:port) an Origin may name to count as same-origin; empty means
    #: the loopback names and the bind host. DNS rebinding points a foreign name at us,
    #: so the `Host` header alone proves nothing.
    allowed_hosts: tuple[str, ...] = ()
    #: When set, `GET /metrics` needs `Authorization: Bearer <metrics_token>`.
    metrics_token: str | None = None
    agent: str = "echo"
    #: Further agent specs sessions may choose at creation (besides none, echo, openai and
    #: `agent`). Import paths are never taken from a request unless listed here.
    agents: tuple[str, ...] = ()
    echo_delay_ms: int = 20
    rate_limit: float = 20.0
    rate_burst: int = 40
    max_frame: int = 65536
    #: Requests one batch frame may hold; a longer batch gets one `too_large` error.
    max_batch: int = 100
    #: Frames one fragmented WebSocket message may arrive in; more: close 1009.
    max_fragments: int = 1024
    queue_bytes: int = 1_048_576
    heartbeat_ms: int = 30_000
    connect_timeout_ms: int = 10_000
    max_subscriptions: int = 100
    #: Per-user bounds (docs/security.md, "Per-user limits"); 0 turns one off.
    #: WebSocket connections one user may hold open at once.
    max_connections_per_user: int = 100
    #: Sends (and signals) per second of one user across all their connections and HTTP,
    #: on top of each connection's own `rate_limit`; and the burst saved.
    user_rate_limit: float = 40.0
    user_rate_burst: int = 80
    #: Long-polls (`GET …/events?wait=`) and SSE streams one user may hold at once.
    max_long_polls_per_user: int = 20
    max_streams_per_user: int = 20
    #: Sessions one user may create per second, and the burst saved.
    session_create_rate: float = 1.0
    session_create_burst: int = 30
    #: Assistant replies one session may have queued; a message over it is refused.
    max_agent_backlog: int = 50
    agent_concurrency: int = 32
    agent_timeout_s: float = 120.0
    #: How long a send whose commit outcome is unknown waits for the store to tell
    #: (docs/guarantees.md, "Uncertain commit outcomes"); then its connection closes.
    uncertain_commit_ms: int = 10_000
    #: Rate-limited requests within `rate_window_ms` that make the server close with 4008.
    rate_strikes: int = 50
    rate_window_ms: int = 10_000
    log_level: str = "info"
    #: HTTP edge (server/edge.py): the time a request head may take to arrive, from the
    #: connection's start (or a later request's first byte); then 408 and close.
    http_head_timeout_s: float = 10.0
    #: The time a request body may take, from the end of its head.
    http_body_timeout_s: float = 30.0
    #: How long an idle kept-alive HTTP connection stays open.
    http_keepalive_s: float = 5.0
    #: Request line plus headers, in bytes (over it: 431).
    http_max_header_bytes: int = 16_384
    #: Header lines of one request (over them: 431).
    http_max_headers: int = 100
    #: Request body, in bytes (over it: 413, from Content-Length before reading).
    http_max_body_bytes: int = 1_048_576
    #: Open client connections, HTTP and WebSocket (over it: 503 and close); 0: the
    #: descriptor limit (RLIMIT_NOFILE) less 64.
    max_connections: int = 0
    #: On SIGTERM: how long in-flight work (acks, long-polls, streams) may take before
    #: the remaining connections are cut.
    shutdown_grace_s: float = 10.0
    #: Development mode: the chat UI may mint a token for any name (never on a shared host).
    dev: bool = False
    #: Extra settings passed to agent factories (the whole environment, by default).
    settings: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: True when `jwt_secret` was made up at start because none was configured.
    generated_secret: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Config:
        """Build from `TIDINGS_<FIELD>` variables; `overrides` (serve flags) win."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("settings", "generated_secret"):
                continue
            raw = env.get(f"TIDINGS_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["settings"] = dict(env)
        return cls(**values)

    @property
    def needs_secret(self) -> bool:
        return not self.jwt_secret and self.jwt_algorithm.upper().startswith("HS")


#: Where `serve` keeps the key it made up when none was configured, so that `tidings token`
#: run in the same folder signs tokens the server accepts.
SECRET_FILE = "tidings.secret"


def with_local_secret(config: Config, *, create: bool) -> Config:
    """Fill in a missing HS256 key from ./tidings.secret, making the file when `create`."""
    if not config.needs_secret:
        return config
    path = Path(SECRET_FILE)
    if path.exists():
        secret = path.read_text().strip()
    elif create:
        secret = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
    else:
        raise ValueError(
            "no TIDINGS_JWT_SECRET set and no ./tidings.secret yet: set the variable, "
            "or run `tidings serve` here once"
        )
    return replace(config, jwt_secret=secret, generated_secret=True)


_INTS = {
    "port",
    "echo_delay_ms",
    "rate_burst",
    "max_frame",
    "max_batch",
    "max_fragments",
    "queue_bytes",
    "heartbeat_ms",
    "connect_timeout_ms",
    "max_subscriptions",
    "agent_concurrency",
    "rate_strikes",
    "rate_window_ms",
    "uncertain_commit_ms",
    "http_max_header_bytes",
    "http_max_headers",
    "http_max_body_bytes",
    "max_connections",
    "max_connections_per_user",
    "user_rate_burst",
    "max_long_polls_per_user",
    "max_streams_per_user",
    "session_create_burst",
    "max_agent_backlog",
}
_FLOATS = {
    "rate_limit",
    "agent_timeout_s",
    "shutdown_grace_s",
    "http_head_timeout_s",
    "http_body_timeout_s",
    "http_keepalive_s",
    "user_rate_limit",
    "session_create_rate",
}
_BOOLS = {"dev"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, raw: str) -> Any:
    try:
        if name in _INTS:
            return int(raw)
        if name in _FLOATS:
            return float(raw)
    except ValueError:
        raise ValueError(f"TIDINGS_{name.upper()} must be a number, not {raw!r}") from None
    if name in _BOOLS:
        if raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError(f"TIDINGS_{name.upper()} must be 1 or 0, not {raw!r}")
    if name in ("allowed_origins", "agents", "allowed_hosts"):
        return _split(raw)
    return raw
