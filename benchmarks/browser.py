"""The browser client's speed, in Debian's Chromium, beside a baseline measured in the same run.

    python -m benchmarks.browser [--quick] [--events N] [--words N] [--out DIR]

Two rows:
- **replica apply**: events per second the JS replica (`lib/replica.js`) applies in
  Chromium, against the Python `Replica` applying the very same events in this process.
- **streamed reply render**: a 1,000-word message sent from the chat UI in Chromium, from
  the keypress to the complete echo reply shown in the page, against the same message sent
  by a bare WebSocket client in Python, timed from the send to the reply's
  `message.completed` event (the server's part alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright
from tests.browser.conftest import CHROMIUM, FLAGS
from tests.server.harness import Server, make_token, running_server
from websockets.asyncio.client import connect

from tidings.client.replica import Replica

RESULTS = Path(__file__).resolve().parent / "results"
SESSION = "s_0123456789abcdef"


def events(count: int) -> list[dict[str, Any]]:
    """`count` events of one session: messages and cards, the mix a chat makes."""
    out: list[dict[str, Any]] = []
    for seq in range(2, count + 2):
        if seq % 5:
            data: dict[str, Any] = {
                "message": {
                    "id": f"m_{seq}",
                    "role": "user",
                    "author": f"user{seq % 7}",
                    "content": f"message number {seq} with a few words in it",
                    "is_code": False,
                    "status": "complete",
                    "created_at": seq,
                }
            }
            kind = "message.created"
        else:
            data = {"card": {"id": f"c_{seq}", "title": "t", "content": "c", "tokens": 1}}
            kind = "card.added"
        out.append(
            {
                "type": "event",
                "session": SESSION,
                "seq": seq,
                "kind": kind,
                "ts": seq,
                "author": "alice",
                "data": data,
            }
        )
    return out


def python_apply_rate(batch: list[dict[str, Any]], reps: int) -> float:
    rates = []
    for _ in range(reps):
        replica = Replica(SESSION, user="alice")
        replica.load_snapshot(1, {"title": "t", "messages": []})
        start = time.perf_counter()
        for event in batch:
            replica.receive_event(event)
        rates.append(len(batch) / (time.perf_counter() - start))
    return statistics.median(rates)


JS_APPLY = """async ([events, reps, session]) => {
  const { Replica } = await import("/static/lib/replica.js");
  const rates = [];
  for (let r = 0; r < reps; r += 1) {
    const replica = new Replica(session, { user: "alice" });
    replica.loadSnapshot(1, { title: "t", messages: [] });
    const start = performance.now();
    for (const event of events) replica.receiveEvent(event);
    rates.push(events.length / ((performance.now() - start) / 1000));
  }
  rates.sort((a, b) => a - b);
  return rates[Math.floor(rates.length / 2)];
}"""


async def server_reply_ms(server: Server, session: str, text: str) -> float:
    """Send `text` over a bare WebSocket; ms until its echo reply's `message.completed`."""
    async with connect(server.ws_url, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "connect", "id": 1, "token": make_token("alice")}))
        await _until(ws, lambda f: f.get("type") == "connected")
        await ws.send(json.dumps({"type": "subscribe", "id": 2, "session": session}))
        await _until(ws, lambda f: f.get("type") == "subscribed")
        start = time.perf_counter()
        await ws.send(
            json.dumps(
                {
                    "type": "send",
                    "id": 3,
                    "session": session,
                    "client_id": f"bench-{time.time_ns()}",
                    "kind": "message",
                    "data": {"content": text},
                }
            )
        )
        await _until(ws, lambda f: f.get("kind") == "message.completed")
        return (time.perf_counter() - start) * 1000


async def _until(ws: Any, predicate: Any) -> None:
    while True:
        value = json.loads(await ws.recv())
        for frame in value if isinstance(value, list) else [value]:
            if predicate(frame):
                return


async def ui_reply_ms(page: Any, text: str) -> float:
    """Type `text` in the UI and press Enter; ms until the whole echo reply is shown."""
    expected = len("echo: " + text)
    before = await page.locator(".message[data-role=assistant]").count()
    await page.fill("#message-input", text)
    start = time.perf_counter()
    await page.press("#message-input", "Enter")
    await page.wait_for_function(
        """([before, expected]) => {
          const replies = document.querySelectorAll('.message[data-role=assistant]');
          if (replies.length <= before) return false;
          const last = replies[replies.length - 1];
          return last.dataset.status === 'complete' &&
                 last.querySelector('.content').textContent.length === expected;
        }""",
        arg=[before, expected],
        timeout=60_000,
        polling="raf",
    )
    return (time.perf_counter() - start) * 1000


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    batch = events(args.events)
    reps = 1 if args.quick else 5
    text = " ".join(f"word{i}" for i in range(args.words))
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            running_server(
                Path(tmp), dev=True, agent="echo", echo_delay_ms=0, rate_limit=0
            ) as server,
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = await browser.new_page()
            await page.goto(server.http_url + "/")
            js_rate: float = await page.evaluate(JS_APPLY, [batch, reps, SESSION])
            py_rate = python_apply_rate(batch, reps)

            await page.wait_for_selector("body[data-ready=true]")
            await page.fill("#dev-name", "alice")
            await page.click("#dev-form button[type=submit]")
            await page.wait_for_selector("#badge[data-state=connected]")
            await page.fill("#create-title", "bench")
            await page.click("#create-form button[type=submit]")
            await page.wait_for_function(
                "window.tidingsSession && window.tidingsSession.getSnapshot().loaded"
            )
            session: str = await page.evaluate("window.tidingsSession.id")
            ui, bare = [], []
            for _ in range(reps):
                bare.append(await server_reply_ms(server, session, text))
                ui.append(await ui_reply_ms(page, text))
            await browser.close()
    ui_ms, bare_ms = statistics.median(ui), statistics.median(bare)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"events": args.events, "words": args.words, "reps": reps},
        "rows": [
            {
                "row": "replica apply (events/s)",
                "tidings.js in Chromium": round(js_rate),
                "baseline: Python Replica": round(py_rate),
                "ratio": round(js_rate / py_rate, 2),
            },
            {
                "row": f"{args.words}-word streamed reply (ms)",
                "tidings.js in Chromium": round(ui_ms, 1),
                "baseline: server alone (bare WebSocket)": round(bare_ms, 1),
                "ratio": round(ui_ms / bare_ms, 2),
            },
        ],
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.browser",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one repetition, fewer events")
    parser.add_argument("--events", type=int, default=None, help="events to apply (50,000)")
    parser.add_argument("--words", type=int, default=1000, help="words in the streamed reply")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON")
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 5_000 if args.quick else 50_000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    document = asyncio.run(measure(args))
    for row in document["rows"]:
        print("  ".join(f"{key}: {value}" for key, value in row.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")
    path = args.out / f"{stamp}-browser.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
