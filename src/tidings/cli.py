"""`tidings serve | token | migrate`: the command line.

Every setting is a `TIDINGS_*` environment variable and a `serve` flag; a flag wins."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, fields
from typing import Any

import tidings
from tidings.server.config import SECRET_FILE, Config, with_local_secret

#: What each setting does, for `--help` (the README's configuration table says more).
DESCRIPTIONS = {
    "host": "address to listen on",
    "port": "port to listen on (0: any free port)",
    "database_url": "the store: sqlite:///relative.db, sqlite:////absolute.db, "
    "postgresql://user@host/db or memory://",
    "redis_url": "reserved for the multi-node backplane (not used yet)",
    "jwt_secret": "HS* signing key (at least 32 bytes for HS256)",
    "jwt_algorithm": "the one algorithm tokens must use (HS256, RS256, ES256, ...)",
    "jwt_public_key": "PEM public key for RS*/ES* tokens",
    "jwt_jwks_url": "JWKS URL to fetch RS*/ES* keys from",
    "jwt_audience": "required `aud` claim",
    "jwt_issuer": "required `iss` claim",
    "allowed_origins": "comma-separated browser origins allowed to connect (* for any)",
    "allowed_hosts": "comma-separated host names same-origin may use "
    "(default: localhost, 127.0.0.1, ::1 and the bind host)",
    "metrics_token": "bearer token GET /metrics requires (default: public)",
    "agent": "default agent of new sessions: echo, openai, none or package.module:factory",
    "agents": "comma-separated further agent specs sessions may choose",
    "echo_delay_ms": "the echo agent's pause between words",
    "rate_limit": "sends and signals per second per connection (0: no limit)",
    "rate_burst": "sends and signals allowed at once above the rate",
    "max_frame": "largest inbound frame in bytes (larger: close 1009)",
    "max_batch": "most requests in one frame",
    "max_fragments": "most fragments of one WebSocket message",
    "queue_bytes": "outbound queue bound per connection (over it: close 4009)",
    "heartbeat_ms": "WebSocket ping period",
    "connect_timeout_ms": "time to send a successful connect (else close 4001)",
    "max_subscriptions": "sessions per connection",
    "agent_concurrency": "replies running at once",
    "agent_timeout_s": "longest reply",
    "uncertain_commit_ms": "how long to look for a commit whose outcome was lost",
    "rate_strikes": "refusals within the window that close the connection with 4008",
    "rate_window_ms": "the window of rate_strikes",
    "http_head_timeout_s": "seconds a request head may take (then 408); covers upgrades",
    "http_body_timeout_s": "seconds a request body may take after its head",
    "http_keepalive_s": "seconds an idle kept-alive HTTP connection stays open",
    "http_max_header_bytes": "request line plus headers, in bytes (over: 431)",
    "http_max_headers": "header lines per request (over: 431)",
    "http_max_body_bytes": "request body in bytes (over: 413, before reading)",
    "max_connections": "open connections, HTTP and WebSocket (0: descriptor limit less 64)",
    "log_level": "debug, info, warning, error or critical",
    "shutdown_grace_s": "on SIGTERM, the longest wait for in-flight acks and closing sockets",
    "dev": "development mode: the chat UI mints a token for any name (never on a shared host)",
}

#: Settings read by the `openai` agent (from the environment, or these flags).
OPENAI_SETTINGS = {
    "openai_base_url": "OpenAI-compatible endpoint (default: api.openai.com)",
    "openai_api_key": "API key of that endpoint",
    "openai_model": "model name (required by the openai agent)",
    "openai_system_prompt": "system prompt of every reply",
    "openai_timeout_s": "longest call to the endpoint, in seconds (default 120)",
}

_INTERNAL = {"settings", "generated_secret"}


def _default(f: Any) -> str:
    if f.name == "jwt_secret":
        return f"made once into ./{SECRET_FILE}"
    value = f.default if f.default is not MISSING else None
    if value in (None, (), ""):
        return "none"
    if isinstance(value, bool):
        return "off"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _add_settings(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """A flag for each `Config` setting (only `names`, when given)."""
    group = parser.add_argument_group("settings (each also a TIDINGS_* environment variable)")
    for f in fields(Config):
        if f.name in _INTERNAL or (names is not None and f.name not in names):
            continue
        flag = "--" + f.name.replace("_", "-")
        env = f"TIDINGS_{f.name.upper()}"
        about = DESCRIPTIONS.get(f.name, "see the README's configuration table")
        if f.type in (bool, "bool"):
            group.add_argument(
                flag,
                dest=f.name,
                action="store_const",
                const="1",
                default=None,
                help=f"{about} [default: off; env {env}=1]",
            )
            continue
        group.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{about} [default: {_default(f)}; env {env}]",
        )


def _add_openai(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the openai agent")
    for name, about in OPENAI_SETTINGS.items():
        env = f"TIDINGS_{name.upper()}"
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.removeprefix("openai_").upper(),
            help=f"{about} [env {env}]",
        )


def _config(args: argparse.Namespace) -> Config:
    env = dict(os.environ)
    names = [f.name for f in fields(Config) if f.name not in _INTERNAL] + list(OPENAI_SETTINGS)
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            env[f"TIDINGS_{name.upper()}"] = str(value)
    return Config.from_env(env)


def _parser() -> argparse.ArgumentParser:
    def formatter(prog: str) -> argparse.HelpFormatter:
        return argparse.HelpFormatter(prog, max_help_position=34)

    parser = argparse.ArgumentParser(prog="tidings", description=__doc__, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"tidings {tidings.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server.",
        usage="%(prog)s [options]",
        formatter_class=formatter,
    )
    _add_settings(serve)
    _add_openai(serve)
    token = sub.add_parser(
        "token",
        help="print a token signed with the configured key",
        description="Print a token for USER, signed with the key `serve` uses.",
        formatter_class=formatter,
    )
    token.add_argument("user", metavar="USER", help="the token's subject (`sub`)")
    token.add_argument(
        "--ttl", type=int, default=3600, help="seconds until it expires [default: 3600]"
    )
    _add_settings(token, ("jwt_secret", "jwt_algorithm", "jwt_audience", "jwt_issuer"))
    migrate = sub.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Create or upgrade the database schema.",
        formatter_class=formatter,
    )
    _add_settings(migrate, ("database_url",))
    return parser


def _fail(message: str, *secrets: str | None) -> int:
    # One line: a setting's problem is a sentence, never a traceback (nor a secret).
    line = message.splitlines()[0] if message else "error"
    for secret in secrets:
        if secret:
            line = line.replace(secret, "***")
    print(f"tidings: {line}", file=sys.stderr)
    return 2


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
        if args.command in ("serve", "token"):
            config = with_local_secret(config, create=args.command == "serve")
    except ValueError as exc:
        return _fail(str(exc))
    if args.command == "serve":
        return _serve(config)
    if args.command == "token":
        return _token(config, args.user, args.ttl)
    if args.command == "migrate":
        return _migrate(config)
    return 2


def _serve(config: Config) -> int:
    try:
        from tidings.backends.factory import check_writable
        from tidings.server import startup
        from tidings.server.app import run
        from tidings.server.node import wall_clock_ms
    except ImportError as exc:
        return _fail(
            f"serve needs the server's dependencies ({exc.name} is missing): "
            "pip install 'tidings[server]'"
        )

    try:
        startup.check_settings(config)
        agents = startup.check_agents(config)
    except ValueError as exc:
        return _fail(str(exc))
    from tidings.server.logs import configure

    configure(config.log_level)
    try:
        why = asyncio.run(check_writable(config.database_url, wall_clock_ms))
    except Exception as exc:  # unreachable, refused, bad credentials: all one line
        why = f"{type(exc).__name__}: {exc}"
    if why is not None:
        where = startup.redact_url(config.database_url)
        return _fail(f"cannot serve on {where}: {why}", _password(config.database_url))
    try:
        sock = startup.bind(config.host, config.port)
    except ValueError as exc:
        return _fail(str(exc))
    # Through the log (JSON lines, like everything else on stderr), for whoever reads it.
    log = logging.getLogger("tidings.serve")
    for line in startup.banner(config, sock.getsockname()[1], agents):
        log.info("%s", line)
    if config.dev:
        print(
            "tidings: DEV MODE: the chat UI mints a token for any name it is given. "
            "Never run --dev on a shared or public host.",
            file=sys.stderr,
        )
    if config.generated_secret:
        print(
            f"tidings: no TIDINGS_JWT_SECRET set; signing tokens with the key in "
            f"./{SECRET_FILE} (made once, kept for the next run). "
            f"`tidings token USER` here prints a token for it.",
            file=sys.stderr,
        )
    run(config, sock)
    return 0


def _token(config: Config, user: str, ttl: int) -> int:
    from tidings.core.auth import issue

    try:
        token = issue(
            user,
            secret=config.jwt_secret,
            ttl_s=ttl,
            now_s=int(time.time()),
            algorithm=config.jwt_algorithm,
            audience=config.jwt_audience,
            issuer=config.jwt_issuer,
        )
    except ValueError as exc:
        return _fail(str(exc))
    print(token)
    return 0


def _migrate(config: Config) -> int:
    from tidings.backends.factory import open_store
    from tidings.server.node import wall_clock_ms
    from tidings.server.startup import redact_url

    async def migrate() -> None:
        store = open_store(config.database_url, wall_clock_ms)
        await store.open()
        await store.close()

    where = redact_url(config.database_url)
    try:
        asyncio.run(migrate())
    except Exception as exc:
        return _fail(
            f"cannot migrate {where}: {type(exc).__name__}: {exc}",
            _password(config.database_url),
        )
    print(f"tidings: schema of {where} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
