"""Autobahn|Testsuite's fuzzing client against the server's WebSocket layer.

Autobahn expects an echo server, and Tidings answers frames with protocol replies, so
the test serves `/v1/ws` with the real `WebSocket` class (handshake, frame parsing,
fragments, control frames, closing, outgoing framing) and only the message handler
swapped for an echo: a text message is checked for UTF-8 as the connection does
(1007 when it is not), then echoed with its opcode. Cases 1-7 and 10 run whole; case 9
(limits and performance) only up to 1 MiB messages, and with the frame limit raised to
16 MiB and the rate limit off, as a fuzzer needs. Every case must end OK, NON-STRICT or
INFORMATIONAL; the NON-STRICT ones are listed in docs/security.md.

Autobahn runs under Python 2.7: `.ci/run` installs it into `.venv-autobahn/` (with
pyenv's 2.7.18); without it the test is skipped, and under CI=true (where 2.7 is
there) it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import running_server
from tidings.protocol.codes import CloseCode
from tidings.server.node import Node
from tidings.server.websocket import WebSocket

ROOT = Path(__file__).resolve().parents[2]
WSTEST = ROOT / ".venv-autobahn" / "bin" / "wstest"

CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
#: Case 9's bigger messages (4-16 MiB, and 1 MiB chopped into tiny frames) take minutes
#: each under a loaded CI machine; 9.1-9.2 up to 1 MiB and 9.7-9.8 (many small ones) stay.
EXCLUDED = ["9.1.4", "9.1.5", "9.1.6", "9.2.4", "9.2.5", "9.2.6", "9.3.*", "9.4.*"]
EXCLUDED += ["9.5.*", "9.6.*"]
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}

#: Case families whose NON-STRICT verdict is documented (docs/security.md, "Autobahn").
NON_STRICT_DOCUMENTED = (
    # A reserved bit or opcode after valid frames: failed as soon as parsed, which may be
    # before the echo of the frames before it is written (timing: the exact cases vary).
    "3.",
    "4.",
    # A continuation with nothing to continue, between other frames.
    "5.15",
    # Invalid UTF-8 in a fragmented text message: failed (1007) when the message is
    # whole, not at the fragment where the bad byte arrives.
    "6.4.",
)

pytestmark = [pytest.mark.autobahn, pytest.mark.slow]


class EchoSocket(WebSocket):
    """The production WebSocket with the protocol layer replaced by an echo."""

    def _message(self, data: bytes) -> None:
        if self.closing:
            return
        if self._text:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                return
            self.protocol.send_text(text.encode())
        else:
            self.protocol.send_binary(data)
        self._write_protocol_output()

    def _handshake(self, request: Any) -> None:
        super()._handshake(request)
        # No `connect` will come: the echo needs no connection or its timers.
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.on_closed()


class EchoNode(Node):
    def ws_protocol(self) -> type[WebSocket]:
        node = self

        class Bound(EchoSocket):
            def __init__(self, config: Any, server_state: Any, *a: Any, **k: Any) -> None:
                super().__init__(node, server_state)

        return Bound


PY27 = Path.home() / ".pyenv" / "versions" / "2.7.18" / "bin" / "python"


def _skip_or_fail(reason: str) -> None:
    # Under CI the install step ran: where Python 2.7 is there, a missing suite is a failure.
    if os.environ.get("CI") == "true" and PY27.exists():
        pytest.fail(f"{reason} (.ci/run installs it)")
    pytest.skip(reason)


async def test_autobahn_fuzzingclient_cases_pass(tmp_path: Path) -> None:
    if not WSTEST.exists():
        _skip_or_fail(f"Autobahn|Testsuite is not installed at {WSTEST}")
    from tests.server.harness import server_config

    config = server_config(tmp_path, max_frame=16 * 1024 * 1024, rate_limit=0)
    node = EchoNode(config)
    async with running_server(tmp_path, node=node) as server:
        spec = {
            "outdir": str(tmp_path / "reports"),
            "servers": [{"agent": "tidings", "url": server.ws_url}],
            "cases": CASES,
            "exclude-cases": EXCLUDED,
            "exclude-agent-cases": {},
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        with open(tmp_path / "wstest.log", "wb") as log:
            process = await asyncio.create_subprocess_exec(
                str(WSTEST),
                "-m",
                "fuzzingclient",
                "-s",
                str(tmp_path / "spec.json"),
                cwd=tmp_path,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                await asyncio.wait_for(process.wait(), 600)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    report = json.loads((tmp_path / "reports" / "index.json").read_text())["tidings"]
    assert len(report) > 250, f"only {len(report)} cases ran"
    verdicts = {case: (r["behavior"], r["behaviorClose"]) for case, r in report.items()}
    bad = {c: v for c, v in verdicts.items() if not set(v) <= ACCEPTED}
    assert not bad, f"Autobahn cases not passed: {dict(sorted(bad.items()))}"
    non_strict = {c for c, v in verdicts.items() if "NON-STRICT" in v}
    print(f"autobahn: {len(report)} cases; NON-STRICT: {sorted(non_strict)}")
    undocumented = {c for c in non_strict if not c.startswith(NON_STRICT_DOCUMENTED)}
    assert not undocumented, sorted(undocumented)
