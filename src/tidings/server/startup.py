"""What `tidings serve` checks before it claims anything: settings, agents, the store and
the port, each refused in one line (exit status 2); then the banner."""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit, urlunsplit

import tidings
from tidings.agents.loader import load_agent
from tidings.core.auth import check_secret
from tidings.server.config import Config

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

#: Settings that must be more than zero (the others may be zero: `rate_limit` 0 is off).
_POSITIVE = (
    "max_frame",
    "queue_bytes",
    "heartbeat_ms",
    "connect_timeout_ms",
    "max_subscriptions",
    "agent_concurrency",
    "agent_timeout_s",
    "rate_burst",
    "rate_strikes",
    "rate_window_ms",
)
_NOT_NEGATIVE = ("echo_delay_ms", "rate_limit", "shutdown_grace_s")


def redact_url(url: str | None) -> str:
    """`url` with any password replaced by `***` (safe to print or log)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if not password:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_settings(config: Config) -> None:
    """`ValueError` (one line, naming the variable) for a setting the server cannot use."""
    if config.log_level.lower() not in LOG_LEVELS:
        raise ValueError(
            f"TIDINGS_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {config.log_level!r}"
        )
    if not 0 <= config.port <= 65535:
        raise ValueError(f"TIDINGS_PORT must be between 0 and 65535, not {config.port}")
    for name in _POSITIVE:
        if getattr(config, name) <= 0:
            value = getattr(config, name)
            raise ValueError(f"TIDINGS_{name.upper()} must be more than zero, not {value}")
    for name in _NOT_NEGATIVE:
        if getattr(config, name) < 0:
            value = getattr(config, name)
            raise ValueError(f"TIDINGS_{name.upper()} must be zero or more, not {value}")
    if config.jwt_secret and config.jwt_algorithm.upper().startswith("HS"):
        try:
            check_secret(config.jwt_secret, config.jwt_algorithm.upper())
        except ValueError as exc:
            raise ValueError(f"TIDINGS_JWT_SECRET is too short: {exc}") from None
    from tidings.backends.factory import open_store

    # Only the URL's form here (an unknown scheme); reaching the database comes next.
    open_store(config.database_url, lambda: 0)


def check_agents(config: Config) -> list[str]:
    """Load every configured agent once, as the first session would: `ValueError` when
    one cannot load (a bad import path, `openai` without a model). Returns their specs."""
    settings = dict(config.settings)
    settings.setdefault("TIDINGS_ECHO_DELAY_MS", str(config.echo_delay_ms))
    specs = list(dict.fromkeys([config.agent, *config.agents]))
    for spec in specs:
        try:
            load_agent(spec, settings)
        except ValueError as exc:
            variable = "TIDINGS_AGENT" if spec == config.agent else "TIDINGS_AGENTS"
            raise ValueError(f"{variable}: {exc}") from None
    return specs


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a busy port is refused before anything starts
    (uvicorn would run the app's startup first, then fail to bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "the port is in use by another program"
        else:
            why = (exc.strerror or str(exc)).lower()
        raise ValueError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def banner(config: Config, port: int, agents: list[str]) -> list[str]:
    """What the server is about to serve, secrets left out."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    origins = ", ".join(config.allowed_origins) or "same-origin only"
    broker = (
        f"Redis {redact_url(config.redis_url)} (reserved; not used yet)"
        if config.redis_url
        else "in-process (one node)"
    )
    default = config.agent
    others = [spec for spec in agents if spec != default]
    return [
        f"tidings {tidings.__version__} listening on http://{host}:{port} "
        f"(WebSocket ws://{host}:{port}/v1/ws)",
        f"  store:   {redact_url(config.database_url)}",
        f"  broker:  {broker}",
        f"  agents:  {default} (default)" + (f", {', '.join(others)}" if others else ""),
        f"  origins: {origins}",
        f"  dev mode: {'ON (never on a shared host)' if config.dev else 'off'}",
    ]
