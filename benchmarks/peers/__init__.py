"""Minimal broadcast servers that Tidings is measured against.

Every peer speaks the same tiny protocol: a client opens a WebSocket to
``ws://127.0.0.1:PORT/ws`` (optionally ``?room=NAME``; the default room is ``""``) and
every text frame any client sends is relayed to every client of the same room,
*including the sender*. The load generator ignores what comes back to a publisher.

python-socketio cannot serve plain WebSocket frames, so its peer uses the Socket.IO
framing instead: ``/socket.io/?EIO=4&transport=websocket&room=NAME``, event ``msg``.

Run one with ``python -m benchmarks.peers.NAME --port P`` where NAME is one of
``fastapi_naive``, ``websockets_broadcast``, ``socketio_asgi`` or ``aiohttp_ws``.
"""

PEERS = {
    "fastapi": "benchmarks.peers.fastapi_naive",
    "websockets": "benchmarks.peers.websockets_broadcast",
    "socketio": "benchmarks.peers.socketio_asgi",
    "aiohttp": "benchmarks.peers.aiohttp_ws",
}
