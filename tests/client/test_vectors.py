"""The Python replica runs every shared conformance vector (tests/vectors/*.json).

The browser client runs the same files (`node --test` in src/tidings/web/); both must reach
each vector's expected state, so the two replicas cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tidings.client.replica import ChatMessage, Replica, Resolved

VECTORS = sorted((Path(__file__).parent.parent / "vectors").glob("*.json"))


def _message_view(message: ChatMessage, fields: dict[str, Any]) -> dict[str, Any]:
    return {name: getattr(message, name) for name in fields}


def _resolved_view(resolved: Resolved, fields: dict[str, Any]) -> dict[str, Any]:
    return {name: getattr(resolved, name) for name in fields}


class Runner:
    def __init__(self, vector: dict[str, Any]) -> None:
        self.replica = Replica(vector["session"], user=vector.get("user"))
        self.resolved: list[Resolved] = []

    def apply(self, step: dict[str, Any]) -> None:
        ((op, arg),) = step.items()
        replica = self.replica
        if op == "snapshot":
            replica.load_snapshot(arg["seq"], arg["snapshot"])
        elif op == "event":
            replica.receive_event(arg)
        elif op == "stream":
            replica.receive_stream(arg["message_id"], arg["offset"], arg["text"])
        elif op == "message":
            replica.receive_message(arg)
        elif op == "send":
            replica.add_send(arg["client_id"], arg["kind"], arg["data"])
        elif op == "ack":
            replica.receive_ack(arg["client_id"], arg["seq"], arg["event_id"])
        elif op == "send_failed":
            replica.send_failed(arg["client_id"], arg["error"], arg.get("code"))
        else:
            raise AssertionError(f"unknown step {op!r}")
        self.resolved.extend(replica.take_resolved())

    def check(self, expect: dict[str, Any], where: str) -> None:
        replica = self.replica
        state = replica.state
        actual: dict[str, Any] = {
            "seq": state.seq,
            "gap": list(replica.gap) if replica.gap is not None else None,
            "title": state.title,
            "status": state.status,
            "version": state.version,
            "metadata": state.metadata,
            "agent": state.agent,
            "members": state.members,
            "cards": list(state.cards),
            "unacked": replica.unacked(),
            "refetches": sorted(replica.take_refetches()),
        }
        for name, wanted in expect.items():
            if name == "messages":
                got = [
                    _message_view(message, want)
                    for message, want in zip(state.messages, wanted, strict=False)
                ]
                assert len(state.messages) == len(wanted), (where, state.messages)
                assert got == wanted, where
            elif name == "stats":
                assert {key: state.stats[key] for key in wanted} == wanted, where
            elif name == "resolved":
                got = [
                    _resolved_view(item, want)
                    for item, want in zip(self.resolved, wanted, strict=False)
                ]
                assert len(self.resolved) == len(wanted), (where, self.resolved)
                assert got == wanted, where
            else:
                assert actual[name] == wanted, (where, name)


def test_there_are_vectors_to_run() -> None:
    assert len(VECTORS) >= 15


@pytest.mark.parametrize("path", VECTORS, ids=[path.stem for path in VECTORS])
def test_the_python_replica_reaches_every_vectors_expected_state(path: Path) -> None:
    vector = json.loads(path.read_text())
    runner = Runner(vector)
    for index, step in enumerate(vector["steps"]):
        if "expect" in step:
            runner.check(step["expect"], f"{path.stem}: checkpoint at step {index}")
        else:
            runner.apply(step)
    runner.check(vector["expect"], f"{path.stem}: end")
