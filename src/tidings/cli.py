"""`tidings serve | token | migrate`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import fields

from tidings.server.config import SECRET_FILE, Config, with_local_secret


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    for f in fields(Config):
        if f.name in ("settings", "generated_secret"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(
                flag,
                dest=f.name,
                action="store_const",
                const="1",
                default=None,
                help=f"(env TIDINGS_{f.name.upper()}=1)",
            )
            continue
        parser.add_argument(flag, dest=f.name, default=None, help=f"(env TIDINGS_{f.name.upper()})")


def _config(args: argparse.Namespace) -> Config:
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(Config)
        if f.name not in ("settings", "generated_secret")
        and getattr(args, f.name, None) is not None
    }
    env = dict(os.environ)
    for name, value in overrides.items():
        env[f"TIDINGS_{name.upper()}"] = str(value)
    return Config.from_env(env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidings", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    _serve_flags(serve)
    token = sub.add_parser("token", help="print a token signed with the configured key")
    token.add_argument("user")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    _serve_flags(token)
    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    _serve_flags(migrate)
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        if args.command in ("serve", "token"):
            config = with_local_secret(config, create=args.command == "serve")
    except ValueError as exc:
        print(f"tidings: {exc}", file=sys.stderr)
        return 2

    if args.command == "serve":
        try:
            from tidings.server.app import run
        except ImportError as exc:
            print(
                f"tidings: serve needs the server's dependencies ({exc.name} is missing): "
                "pip install 'tidings[server]'",
                file=sys.stderr,
            )
            return 2
        from tidings.server.logs import configure

        configure(config.log_level)
        from tidings.backends.factory import check_writable
        from tidings.server.node import wall_clock_ms

        why = asyncio.run(check_writable(config.database_url, wall_clock_ms))
        if why is not None:
            print(f"tidings: cannot serve: {why}", file=sys.stderr)
            return 2
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
        run(config)
        return 0
    if args.command == "token":
        from tidings.core.auth import issue

        print(
            issue(
                args.user,
                secret=config.jwt_secret,
                ttl_s=args.ttl,
                now_s=int(time.time()),
                algorithm=config.jwt_algorithm,
                audience=config.jwt_audience,
                issuer=config.jwt_issuer,
            )
        )
        return 0
    if args.command == "migrate":
        from tidings.backends.factory import open_store
        from tidings.server.node import wall_clock_ms

        async def _migrate() -> None:
            store = open_store(config.database_url, wall_clock_ms)
            await store.open()
            await store.close()

        asyncio.run(_migrate())
        print(f"tidings: schema of {config.database_url} is up to date")
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
