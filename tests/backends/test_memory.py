from __future__ import annotations

import pytest

from tidings.backends.base import EventStore
from tidings.backends.memory import MemoryStore

from .contract import EventStoreContract, FakeClock, StoreFactory


class TestMemoryStore(EventStoreContract):
    @pytest.fixture
    def make_store(self, clock: FakeClock) -> StoreFactory:
        # Memory data lives in the object: "reopening" opens the same instance again.
        store = MemoryStore(clock)

        async def make() -> EventStore:
            await store.open()
            return store

        return make
