"""Build the `EventStore` a database URL names (`TIDINGS_DATABASE_URL`)."""

from __future__ import annotations

from tidings.backends.base import Clock, EventStore, StoreUnavailable
from tidings.backends.memory import MemoryStore
from tidings.backends.sqlite import SqliteStore

SUPPORTED = "sqlite:///relative.db, sqlite:////absolute.db, memory://, postgresql://…"


def open_store(url: str, clock: Clock) -> EventStore:
    """The store for `url`, not yet opened: call `await store.open()`.

    * `sqlite:///tidings.db` is a path relative to the working folder,
      `sqlite:////var/lib/tidings/tidings.db` an absolute one;
    * `memory://` keeps everything in the process (tests, demos);
    * `postgresql://…` or `postgres://…` is handed to asyncpg as is.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"not a database URL: {url!r} (expected one of {SUPPORTED})")
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
            )
        return SqliteStore(rest[1:], clock)
    if scheme == "memory":
        return MemoryStore(clock)
    if scheme in ("postgresql", "postgres"):
        try:
            # Imported here: asyncpg is the `postgres` extra, not needed for SQLite.
            from tidings.backends.postgres import PostgresStore
        except ImportError as exc:
            raise ValueError(
                f"PostgreSQL needs asyncpg ({exc.name} is missing): pip install 'tidings[postgres]'"
            ) from None
        return PostgresStore(url, clock)
    raise ValueError(f"unknown database URL scheme {scheme!r} in {url!r} (use {SUPPORTED})")


async def check_writable(url: str, clock: Clock) -> str | None:
    """Why the database `url` names cannot be written, or None when it can (opened,
    migrated and written once, then closed): `tidings serve` refuses to start on it."""
    store = open_store(url, clock)
    try:
        await store.open()
        try:
            await store.probe_write()
        finally:
            await store.close()
    except StoreUnavailable as exc:
        return str(exc)
    return None
