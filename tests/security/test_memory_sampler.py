"""The RSS sampler the attack tests rely on sees real growth and reports no phantom one."""

from __future__ import annotations

import asyncio

from tests.security.memory import MIB, rss_bytes, sampled_rss


def test_rss_of_this_process_is_a_plausible_number_of_bytes() -> None:
    assert 4 * MIB < rss_bytes() < 4096 * MIB


async def test_the_sampler_sees_memory_allocated_inside_the_block() -> None:
    async with sampled_rss(every_s=0.001) as rss:
        ballast = bytearray(64 * MIB)
        ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
        await asyncio.sleep(0.01)
    del ballast
    assert rss.growth_mib >= 48
    assert rss.samples


async def test_an_idle_block_shows_little_growth() -> None:
    async with sampled_rss(every_s=0.001) as rss:
        await asyncio.sleep(0.01)
    assert rss.growth_mib < 8
