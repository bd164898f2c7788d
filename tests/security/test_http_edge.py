"""Issue 9 points 3 and 4 at the HTTP edge: deadlines for heads and bodies (upgrades
included), a cap on open connections, head size/count limits (431), body limits
before reading (413) and authentication before the body."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tests.security.attacks import ServerErrors
from tests.security.memory import MIB, sampled_rss
from tests.server.harness import Server, running_server


async def _open(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server wrote before closing; raises TimeoutError if it kept it open."""
    async with asyncio.timeout(seconds):
        return await reader.read()


async def _status(reader: asyncio.StreamReader) -> int:
    async with asyncio.timeout(5):
        line = await reader.readline()
    return int(line.split()[1])


async def test_an_idle_connection_is_closed_at_the_head_deadline(tmp_path: Path) -> None:
    async with running_server(tmp_path, http_head_timeout_s=0.3) as server:
        reader, writer = await _open(server)
        answer = await _closed_within(reader, 3)
        assert answer.startswith(b"HTTP/1.1 408")
        writer.close()


async def test_a_slowloris_head_trickled_byte_by_byte_is_cut_at_the_deadline(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, http_head_timeout_s=0.4) as server:
        for head in (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ",
            b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        ):
            reader, writer = await _open(server)

            async def trickle(w: asyncio.StreamWriter = writer, data: bytes = head) -> None:
                with contextlib.suppress(ConnectionError):
                    for i in range(len(data)):
                        w.write(data[i : i + 1])
                        await asyncio.sleep(0.05)
                    while True:  # then one header byte at a time, never ending the head
                        w.write(b"a")
                        await asyncio.sleep(0.05)

            task = asyncio.create_task(trickle())
            try:
                answer = await _closed_within(reader, 4)
            finally:
                task.cancel()
                writer.close()
            assert answer.startswith(b"HTTP/1.1 408"), (head, answer)


async def test_a_body_that_never_arrives_is_cut_at_the_body_deadline(tmp_path: Path) -> None:
    async with running_server(tmp_path, http_body_timeout_s=0.3) as server:
        reader, writer = await _open(server)
        writer.write(b"POST /v1/dev/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        answer = await _closed_within(reader, 3)
        assert answer.startswith(b"HTTP/1.1 408")
        writer.close()


async def test_connections_over_the_cap_are_refused_and_closed_at_once(tmp_path: Path) -> None:
    async with running_server(tmp_path, max_connections=20) as server:
        idle = [await _open(server) for _ in range(20)]
        reader, writer = await _open(server)
        answer = await _closed_within(reader, 3)
        assert answer.startswith(b"HTTP/1.1 503")
        writer.close()
        for _, w in idle:
            w.close()
        await asyncio.sleep(0.1)
        # Room again once the idle ones have gone.
        reader, writer = await _open(server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await _status(reader) == 200
        writer.close()


async def _flood(server: Server, head: bytes, chunks: int, chunk: bytes) -> tuple[bytes, float]:
    """Send `head` then `chunks` copies of `chunk` while reading the answer; the server
    may reset the socket once it has refused (unread input): the answer read by then,
    and the server's RSS growth in MiB, are returned."""
    reader, writer = await _open(server)
    answer = b""

    async def read() -> None:
        nonlocal answer
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                answer += data

    async with sampled_rss() as rss:
        task = asyncio.create_task(read())
        with contextlib.suppress(ConnectionError, TimeoutError):
            writer.write(head)
            for _ in range(chunks):
                writer.write(chunk)
                async with asyncio.timeout(3):
                    await writer.drain()
        async with asyncio.timeout(5):
            await task
    writer.close()
    return answer, rss.growth_mib


async def test_a_huge_header_gets_431_without_buffering_it(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        # 64 MiB offered, 1 MiB at a time.
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-big: "
        answer, growth = await _flood(server, head, 64, b"a" * MIB)
        assert answer.startswith(b"HTTP/1.1 431") or answer == b"", answer[:40]
        assert growth < 20, growth
        reader, writer = await _open(server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert await _status(reader) == 431
        writer.close()
    assert not server_errors.lines()


async def test_twenty_thousand_header_lines_get_431(tmp_path: Path) -> None:
    async with running_server(tmp_path, http_max_header_bytes=1_000_000) as server:
        reader, writer = await _open(server)
        lines = b"".join(b"X-%d: v\r\n" % i for i in range(20_000))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        assert await _status(reader) == 431
        writer.close()


async def test_a_100_mb_body_without_a_token_is_refused_before_it_is_read(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        for framing in (b"Content-Length: 104857600\r\n", b"Transfer-Encoding: chunked\r\n"):
            head = b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            chunk = b"a" * MIB
            if framing.startswith(b"Transfer"):
                chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
            answer, growth = await _flood(server, head + framing + b"\r\n", 100, chunk)
            assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 413")), answer[:40]
            assert growth < 20, growth
    assert not server_errors.lines()


async def test_an_oversized_body_gets_413_even_with_a_valid_token(tmp_path: Path) -> None:
    async with running_server(tmp_path, http_max_body_bytes=1000) as server:
        http = server.http("alice")
        async with http:
            big = {"title": "t", "agent": None, "pad": "x" * 5000}
            response = await http.post("/v1/sessions", json=big)
            assert response.status_code == 413
            small = await http.post("/v1/sessions", json={"title": "t"})
            assert small.status_code == 201


async def test_a_post_without_a_token_gets_401_before_its_body_is_read(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        reader, writer = await _open(server)
        # The head promises a body that never comes: the 401 must not wait for it.
        writer.write(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        assert await _status(reader) == 401
        writer.close()
