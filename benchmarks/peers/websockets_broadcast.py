"""The `websockets` library's own server, relaying with `websockets.broadcast()`.

`broadcast` writes the frame to every open connection without awaiting any of them,
which is why it is several times faster than the naive loop.
"""

import asyncio
from collections import defaultdict
from urllib.parse import urlsplit

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

from benchmarks.peers._common import BACKLOG, parse_args, room_of

rooms: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def relay(connection: ServerConnection) -> None:
    request = connection.request
    room = room_of(urlsplit(request.path).query) if request is not None else ""
    members = rooms[room]
    members.add(connection)
    try:
        async for message in connection:
            if isinstance(message, str):
                broadcast(members, message)
    finally:
        members.discard(connection)


async def serve_forever(host: str, port: int) -> None:
    async with serve(relay, host, port, compression=None, max_size=1 << 20, backlog=BACKLOG):
        await asyncio.Future()


def main() -> None:
    args = parse_args(__doc__ or "")
    uvloop.run(serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
