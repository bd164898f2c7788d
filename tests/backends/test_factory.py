from __future__ import annotations

import pytest

from tidings.backends.factory import open_store
from tidings.backends.memory import MemoryStore
from tidings.backends.postgres import PostgresStore
from tidings.backends.sqlite import SqliteStore

from .contract import FakeClock


def test_a_sqlite_url_with_three_slashes_names_a_relative_path() -> None:
    store = open_store("sqlite:///data/tidings.db", FakeClock())
    assert isinstance(store, SqliteStore)
    assert store.path == "data/tidings.db"


def test_a_sqlite_url_with_four_slashes_names_an_absolute_path() -> None:
    store = open_store("sqlite:////var/lib/tidings.db", FakeClock())
    assert isinstance(store, SqliteStore)
    assert store.path == "/var/lib/tidings.db"


def test_memory_and_postgres_urls_pick_their_stores() -> None:
    assert isinstance(open_store("memory://", FakeClock()), MemoryStore)
    assert isinstance(open_store("postgresql://u@h/db", FakeClock()), PostgresStore)
    assert isinstance(open_store("postgres://u@h/db", FakeClock()), PostgresStore)


@pytest.mark.parametrize("url", ["mysql://h/db", "tidings.db", "sqlite://", "sqlite:///"])
def test_an_unknown_or_malformed_url_is_refused_clearly(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        open_store(url, FakeClock())
