"""The naive FastAPI/uvicorn broadcast: await each receiver's send in turn.

This is the baseline every ratio in the report is measured against: the loop most
tutorials show, with nothing clever about it.
"""

from collections import defaultdict

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from benchmarks.peers._common import serve_asgi

app = FastAPI()
rooms: defaultdict[str, set[WebSocket]] = defaultdict(set)


@app.websocket("/ws")
async def relay(websocket: WebSocket, room: str = "") -> None:
    await websocket.accept()
    members = rooms[room]
    members.add(websocket)
    try:
        while True:
            text = await websocket.receive_text()
            for member in list(members):
                try:
                    await member.send_text(text)
                except (WebSocketDisconnect, RuntimeError):
                    members.discard(member)
    except WebSocketDisconnect:
        pass
    finally:
        members.discard(websocket)


def main() -> None:
    serve_asgi(app, __doc__ or "")


if __name__ == "__main__":
    main()
