import asyncio, signal, contextlib
from pathlib import Path
from tests.server.harness import ServerProcess, make_token
async def test_x(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, TIDINGS_LOG_LEVEL="trace")
    server = await proc.start()
    tok = make_token("al")
    c = await server.client_at(f"?token={tok}")
    print(await c.request({"type": "connect"}))
    await c.close()
    async with server.http() as h:
        r = await h.get(f"/v1/sessions?token={tok}")
        print(r.status_code)
    proc.signal(signal.SIGTERM)
    print(await proc.wait())
    print(proc.log())
    print("LEAK" if tok in proc.log() else "clean")
