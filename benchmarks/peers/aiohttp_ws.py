"""aiohttp's WebSocket server, relaying with a loop of `send_str` per receiver."""

import asyncio
from collections import defaultdict

import uvloop
from aiohttp import WSMsgType, web

from benchmarks.peers._common import BACKLOG, parse_args

rooms: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)


async def relay(request: web.Request) -> web.WebSocketResponse:
    websocket = web.WebSocketResponse(compress=False, autoping=True)
    await websocket.prepare(request)
    members = rooms[request.query.get("room", "")]
    members.add(websocket)
    try:
        async for message in websocket:
            if message.type is WSMsgType.TEXT:
                for member in list(members):
                    try:
                        await member.send_str(message.data)
                    except (ConnectionError, RuntimeError):
                        members.discard(member)
    finally:
        members.discard(websocket)
    return websocket


async def serve_forever(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/ws", relay)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=BACKLOG)
    await site.start()
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()


def main() -> None:
    args = parse_args(__doc__ or "")
    uvloop.run(serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
