"""Bounded-memory assertions for the attack suite: a server's resident set, sampled.

An attack that is refused but grows the server's memory is still a hole, so every attack
test samples the RSS of the process serving it while the attack runs and asserts how much
it grew. The sampler reads `/proc/PID/status` (Linux), which costs microseconds, so it
can run every few milliseconds beside the attack without disturbing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

MIB = 1024 * 1024


def rss_bytes(pid: int | None = None) -> int:
    """The resident set size of process `pid` (this process when None), in bytes."""
    path = f"/proc/{pid if pid is not None else os.getpid()}/status"
    with open(path, encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line in {path}")


@dataclass
class RssSamples:
    """What the sampler saw: the RSS before the attack, and the peak during it."""

    baseline: int
    peak: int = 0
    samples: list[int] = field(default_factory=list)

    @property
    def growth(self) -> int:
        """The peak's excess over the baseline, in bytes (0 when it shrank)."""
        return max(0, self.peak - self.baseline)

    @property
    def growth_mib(self) -> float:
        return self.growth / MIB


@contextlib.asynccontextmanager
async def sampled_rss(
    pid: int | None = None, *, every_s: float = 0.02
) -> AsyncIterator[RssSamples]:
    """Sample `pid`'s RSS every `every_s` while the body runs (and once at each end).

    Use it around the attack; assert on `growth` after the block. For an in-process server
    (`running_server`) leave `pid` None: the test's own process is the server's.
    """
    result = RssSamples(baseline=rss_bytes(pid))
    result.peak = result.baseline

    def take() -> None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            value = rss_bytes(pid)
            result.samples.append(value)
            result.peak = max(result.peak, value)

    async def sample() -> None:
        while True:
            take()
            await asyncio.sleep(every_s)

    task = asyncio.get_running_loop().create_task(sample())
    try:
        yield result
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        take()
