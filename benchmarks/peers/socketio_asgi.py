"""python-socketio as an ASGI app on uvicorn: event ``msg`` is re-emitted to the room.

Clients connect to ``/socket.io/?EIO=4&transport=websocket&room=NAME``; the room is
read from the query string at connect time.
"""

from typing import Any

import socketio

from benchmarks.peers._common import room_of, serve_asgi

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*", transports=["websocket"])
app = socketio.ASGIApp(sio)


@sio.event  # type: ignore[untyped-decorator]
async def connect(sid: str, environ: dict[str, Any]) -> None:
    room = room_of(environ.get("QUERY_STRING", ""))
    await sio.save_session(sid, {"room": room})
    await sio.enter_room(sid, room)


@sio.event  # type: ignore[untyped-decorator]
async def msg(sid: str, data: Any) -> None:
    session = await sio.get_session(sid)
    await sio.emit("msg", data, room=session["room"])


def main() -> None:
    serve_asgi(app, __doc__ or "")


if __name__ == "__main__":
    main()
