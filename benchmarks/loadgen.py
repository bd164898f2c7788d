"""The load generator: its own process, asyncio on uvloop, picows clients, loopback only.

    python -m benchmarks.loadgen --config '{"workload": "throughput", ...}' [--standalone]

It talks to the harness (`benchmarks.runner`) through lines of JSON on stdout:
``{"phase": "prepared"}`` (rooms made, publishers connected), ``{"phase": "ready"}``
(every connection open), ``{"phase": "stop"}`` (measurement over) and finally
``{"phase": "result", ...}``. After each phase but the last it waits for a line on
stdin, so the harness can sample the server's CPU and memory at exact points;
``--standalone`` skips the waits. Everything is bounded: connection counts come from
the config and the whole run from its ``timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.clients import Conn, Dialect, Tidings, frames, make_dialect, payload, request_ids
from benchmarks.peers._common import raise_file_limit

Config = dict[str, Any]


class Run:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.standalone = bool(config.get("standalone"))
        self.timeout = float(config.get("connect_timeout", 20))
        self.conns: list[Conn] = []
        self.connect_failures = 0
        self.cpu_mark = (time.process_time(), time.monotonic())
        self.dialect: Dialect = make_dialect(
            config["dialect"],
            int(config["port"]),
            config.get("secret", ""),
            config.get("kind", "send"),
        )

    async def phase(self, name: str, **fields: Any) -> None:
        print(json.dumps({"phase": name, **fields}), flush=True)
        if name != "result" and not self.standalone:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                raise SystemExit("harness went away")

    async def join_many(
        self, rooms: Sequence[str], per_room: int, extra: tuple[str, ...] = ()
    ) -> list[Conn]:
        """`per_room` subscribers in each room, opened with bounded concurrency."""
        gate = asyncio.Semaphore(int(self.config.get("connect_concurrency", 100)))

        async def one(room: str) -> Conn | None:
            async with gate:
                try:
                    conn = await self.dialect.join(room, self.timeout, extra)
                except (OSError, RuntimeError, TimeoutError, ConnectionError) as exc:
                    self.connect_failures += 1
                    if self.connect_failures <= 3:
                        print(f"connect failed: {exc!r}", file=sys.stderr)
                    return None
                self.conns.append(conn)
                return conn

        opened = await asyncio.gather(*(one(room) for room in rooms for _ in range(per_room)))
        joined = [conn for conn in opened if conn is not None]
        if not joined and per_room:
            raise RuntimeError("no connection could be opened")
        return joined

    def start(self, conns: Sequence[Conn]) -> None:
        for conn in conns:
            conn.start()
        # Thousands of long-lived connection objects would make every full collection
        # a pause in the middle of the measurement: move them out of the collector's way.
        gc.collect()
        gc.freeze()
        self.cpu_mark = (time.process_time(), time.monotonic())

    def own_cpu_pct(self) -> float:
        """This process's CPU use since `start`: near 100 means the generator is the limit."""
        cpu, at = self.cpu_mark
        return 100 * (time.process_time() - cpu) / max(1e-9, time.monotonic() - at)

    async def close_all(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.close()
        if self.conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(c.closed for c in self.conns)), 3)

    def lost(self) -> int:
        return sum(1 for conn in self.conns if conn.closed.done())


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "samples": 0}
    ordered = sorted(samples_ns)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return ordered[min(last, round(q * last))] / 1e6

    return {
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1] / 1e6,
        "samples": len(ordered),
    }


async def throughput(run: Run) -> dict[str, Any]:
    """S1: one room, publish as fast as a bounded window of undelivered messages allows.

    The window is counted at one reference subscriber, so the publisher never runs
    ahead of delivery by more than `window` messages: this measures throughput, not
    the growth of queues.
    """
    cfg = run.config
    loop = asyncio.get_running_loop()
    room = run.dialect.prepare(1)[0]
    [publisher] = await run.join_many([room], 1)
    await run.phase("prepared")
    subscribers = await run.join_many([room], int(cfg["subscribers"]))
    run.start([publisher, *subscribers])
    await run.phase("ready")

    window = int(cfg.get("window", 64))
    reference = subscribers[0]
    sent = 0
    waiter: asyncio.Future[None] | None = None

    def delivered_to_reference() -> None:
        if waiter is not None and not waiter.done() and sent - reference.count < window:
            waiter.set_result(None)

    reference.on_count = delivered_to_reference
    publish, dialect = publisher.send, run.dialect
    started = loop.time()
    end = started + float(cfg["duration"])
    while (now := loop.time()) < end:
        if sent - reference.count >= window:
            waiter = loop.create_future()
            try:
                await asyncio.wait_for(waiter, end - now)
            except TimeoutError:
                break
            continue
        publish(dialect.publish(room, payload()))
        sent += 1
    elapsed = loop.time() - started
    delivered = sum(conn.count for conn in subscribers)
    loadgen_cpu = run.own_cpu_pct()
    await run.phase("stop")
    return {
        "loadgen_cpu_pct": loadgen_cpu,
        "deliveries_per_s": delivered / elapsed,
        "publishes_per_s": sent / elapsed,
        "published": sent,
        "delivered": delivered,
        "subscribers": len(subscribers),
    }


async def paced(run: Run) -> dict[str, Any]:
    """S2, S3, S6: `rooms` rooms of `subscribers` each, one publisher per room at `rate` msg/s."""
    cfg = run.config
    rooms = run.dialect.prepare(int(cfg.get("rooms", 1)))
    publishers = await run.join_many(rooms, 1)
    await run.phase("prepared")
    per_room = int(cfg["subscribers"])
    subscribers = await run.join_many(rooms, per_room)
    latencies: list[int] = []
    for conn in subscribers:
        conn.lats = latencies
    run.start([*publishers, *subscribers])
    await run.phase("ready")

    rate, duration = float(cfg["rate"]), float(cfg["duration"])
    sent = [0]

    async def publish(conn: Conn, room: str, offset: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        due = start + offset
        while due < start + duration:
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            conn.send(run.dialect.publish(room, payload()))
            sent[0] += 1
            due += 1 / rate

    await asyncio.gather(
        *(
            publish(conn, room, i / (rate * len(rooms)))
            for i, (conn, room) in enumerate(zip(publishers, rooms, strict=True))
        )
    )
    loadgen_cpu = run.own_cpu_pct()
    await run.phase("stop")
    expected = sent[0] * len(subscribers) // max(1, len(rooms))
    await _until(lambda: sum(c.count for c in subscribers) >= expected, float(cfg.get("grace", 5)))
    delivered = sum(c.count for c in subscribers)
    return {
        **percentiles(latencies),
        "deliveries_per_s": delivered / duration,
        "loadgen_cpu_pct": loadgen_cpu,
        "published": sent[0],
        "expected": expected,
        "delivered": delivered,
        "missing": max(0, expected - delivered),
        "subscribers": len(subscribers),
    }


async def idle(run: Run) -> dict[str, Any]:
    """S4: open `subscribers` idle connections; the harness measures the server's RSS."""
    room = run.dialect.prepare(1)[0]
    await run.join_many([room], 1)  # warm-up: the first connection loads lazy code
    await run.phase("prepared")
    subscribers = await run.join_many([room], int(run.config["subscribers"]))
    run.start(run.conns)
    await run.phase("ready")
    await run.phase("stop")
    return {"connections": len(subscribers)}


async def acks(run: Run) -> dict[str, Any]:
    """S5 (Tidings only): `senders` connections each send, wait for the ack, send again."""
    cfg = run.config
    dialect = run.dialect
    assert isinstance(dialect, Tidings), "S5 needs the Tidings dialect"
    room = dialect.prepare(1)[0]
    count = int(cfg["senders"])
    if cfg.get("subscribe_senders"):
        senders = await run.join_many([room], count)
    else:
        senders = [await dialect.connect(run.timeout) for _ in range(count)]
        run.conns.extend(senders)
    await run.phase("prepared")
    await run.phase("ready")
    loop = asyncio.get_running_loop()
    end = loop.time() + float(cfg["duration"])
    latencies: list[int] = []
    pending: dict[int, int] = {}
    errors = [0]
    body = "@ack;" + "x" * 40

    def send_next(conn: Conn) -> None:
        if loop.time() < end:
            rid = next(request_ids)
            pending[rid] = time.monotonic_ns()
            conn.send(dialect.send_frame(room, body, rid))

    def on_frame(conn: Conn, data: bytes) -> None:
        if b'"re"' not in data:
            return
        now = time.monotonic_ns()
        for obj in frames(data):
            started = pending.pop(obj.get("re", -1), None)
            if started is None:
                continue
            if obj.get("type") == "ack":
                latencies.append(now - started)
            else:
                errors[0] += 1
            send_next(conn)

    started = loop.time()
    for conn in senders:
        conn.extra = on_frame
        conn.start()
        send_next(conn)
    await asyncio.sleep(max(0.0, end - loop.time()))
    elapsed = loop.time() - started
    await run.phase("stop")
    await _until(lambda: not pending, 5)
    return {
        **{f"ack_{k}": v for k, v in percentiles(latencies).items()},
        "acked_per_s": len(latencies) / elapsed,
        "acked": len(latencies),
        "errors": errors[0],
        "senders": len(senders),
    }


async def agent(run: Run) -> dict[str, Any]:
    """S7 (Tidings only): user messages in an echo-agent session watched by `subscribers`.

    First token: the user's send to each subscriber's first stream frame of the reply.
    Token gap: between consecutive stream frames of one reply at one subscriber (the
    echo agent waits TIDINGS_ECHO_DELAY_MS between words, so the excess is overhead).
    Skew: for one stream frame, the last subscriber's arrival minus the first's.
    Ack latency is measured on this session and on an agent-less twin.
    """
    cfg = run.config
    dialect = run.dialect
    assert isinstance(dialect, Tidings), "S7 needs the Tidings dialect"
    with_agent = dialect.create_session("echo")
    without_agent = dialect.create_session("none")
    [publisher] = await run.join_many([with_agent], 1, (without_agent,))
    await run.phase("prepared")
    subscribers = await run.join_many([with_agent], int(cfg["subscribers"]), (without_agent,))
    await run.phase("ready")

    first_token: list[int] = []
    gaps: list[int] = []
    arrivals: dict[tuple[str, int], list[int]] = {}
    last_seen: dict[int, int] = {}
    sent_at = [0]
    replies: dict[int, asyncio.Future[None]] = {}

    def on_stream(conn: Conn, data: bytes) -> None:
        if b'"stream"' not in data:
            return
        now = time.monotonic_ns()
        for obj in frames(data):
            if obj.get("type") != "stream":
                continue
            offset = int(obj.get("offset", 0))
            if offset == 0:
                first_token.append(now - sent_at[0])
            elif id(conn) in last_seen:
                gaps.append(now - last_seen[id(conn)])
            last_seen[id(conn)] = now
            span = arrivals.setdefault((str(obj.get("message_id")), offset), [now, now])
            span[0], span[1] = min(span[0], now), max(span[1], now)

    def on_publisher(conn: Conn, data: bytes) -> None:
        if b"message.completed" not in data and b"message.failed" not in data:
            return
        for obj in frames(data):
            if obj.get("kind") in ("message.completed", "message.failed"):
                for waiter in replies.values():
                    if not waiter.done():
                        waiter.set_result(None)

    for conn in subscribers:
        conn.extra = on_stream
    publisher.extra = on_publisher
    loop = asyncio.get_running_loop()
    words = " ".join(f"w{i}" for i in range(int(cfg.get("words", 10))))
    half = float(cfg["duration"]) / 2
    ack_lats: dict[str, list[int]] = {"none": [], "echo": []}

    async def send(session: str) -> int:
        rid = next(request_ids)
        publisher.inbox = asyncio.Queue()  # collect the ack through the inbox
        sent_at[0] = time.monotonic_ns()
        publisher.send(dialect.send_frame(session, words, rid))
        deadline = loop.time() + 10
        while True:
            for obj in frames(await publisher.recv(max(0.01, deadline - loop.time()))):
                if obj.get("re") == rid:
                    publisher.start()
                    if obj.get("type") != "ack":
                        raise RuntimeError(f"send failed: {obj}")
                    return time.monotonic_ns() - sent_at[0]
                if obj.get("kind") in ("message.completed", "message.failed"):
                    on_publisher(publisher, json.dumps(obj).encode())

    run.start(subscribers)
    publisher.start()
    end = loop.time() + half
    while loop.time() < end:
        ack_lats["none"].append(await send(without_agent))
    end = loop.time() + half
    replies_done = 0
    while loop.time() < end or not replies_done:
        replies[0] = loop.create_future()
        ack_lats["echo"].append(await send(with_agent))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(replies[0], 10)
            replies_done += 1
        if not replies_done and loop.time() > end + 10:
            break
    await asyncio.sleep(0.2)  # the last frames to the slowest subscribers
    await run.phase("stop")
    skews = [span[1] - span[0] for span in arrivals.values()]
    return {
        **{f"first_token_{k}": v for k, v in percentiles(first_token).items()},
        **{f"token_gap_{k}": v for k, v in percentiles(gaps).items()},
        **{f"skew_{k}": v for k, v in percentiles(skews).items()},
        **{f"ack_agent_{k}": v for k, v in percentiles(ack_lats["echo"]).items()},
        **{f"ack_no_agent_{k}": v for k, v in percentiles(ack_lats["none"]).items()},
        "replies": replies_done,
        "subscribers": len(subscribers),
    }


async def _until(condition: Callable[[], bool], limit_s: float) -> None:
    """Poll `condition` until it holds or `limit_s` passes (deliveries have no event)."""
    for _ in range(max(1, int(limit_s / 0.02))):
        if condition():
            return
        await asyncio.sleep(0.02)


WORKLOADS = {"throughput": throughput, "paced": paced, "idle": idle, "acks": acks, "agent": agent}


async def main_async(config: Config) -> None:
    run = Run(config)
    try:
        result = await asyncio.wait_for(
            WORKLOADS[config["workload"]](run), float(config.get("timeout", 120))
        )
        result["connect_failures"] = run.connect_failures
        result["connections_lost"] = run.lost()
        await run.phase("result", **result)
    finally:
        await run.close_all()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--config", required=True, help="the workload as a JSON object")
    parser.add_argument(
        "--standalone", action="store_true", help="do not wait on stdin between phases"
    )
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    config["standalone"] = args.standalone
    raise_file_limit()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main_async(config))
    else:
        uvloop.run(main_async(config))


if __name__ == "__main__":
    main()
