"""How long handing work to a sleeping thread takes: why idle SQLite batches commit inline.

    python -m benchmarks.thread_handoff [--sleep 0.05] [--count 300] [--loop uvloop|asyncio]

The event loop sleeps `--sleep` seconds, then runs a no-op on a one-thread
`ThreadPoolExecutor`, `--count` times; prints the time from the call to the no-op
starting on its thread ("there") and from its end to the loop resuming ("back"). Run it
pinned to one core (`taskset -c 0`) like the server.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor


async def handoffs(sleep: float, count: int) -> tuple[list[int], list[int]]:
    loop = asyncio.get_running_loop()
    there: list[int] = []
    back: list[int] = []

    def job(called: int) -> int:
        started = time.perf_counter_ns()
        there.append(started - called)
        return time.perf_counter_ns()

    with ThreadPoolExecutor(max_workers=1) as executor:
        await loop.run_in_executor(executor, job, time.perf_counter_ns())  # thread started
        there.clear()
        for _ in range(count):
            await asyncio.sleep(sleep)
            ended = await loop.run_in_executor(executor, job, time.perf_counter_ns())
            back.append(time.perf_counter_ns() - ended)
    return there, back


def _cut(values: list[int], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        there, back = uvloop.run(handoffs(args.sleep, args.count))
    else:
        there, back = asyncio.run(handoffs(args.sleep, args.count))
    print(
        f"after {args.sleep * 1000:g} ms asleep ({args.loop}):"
        f" there p50 {_cut(there, 50):.0f} µs p99 {_cut(there, 99):.0f} µs;"
        f" back p50 {_cut(back, 50):.0f} µs p99 {_cut(back, 99):.0f} µs"
    )


if __name__ == "__main__":
    main()
