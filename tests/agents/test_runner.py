from __future__ import annotations

import asyncio

from tidings.agents.base import Usage
from tidings.agents.echo import EchoAgent
from tidings.agents.runner import AgentRunner
from tidings.core.model import Draft, Kind

from .doubles import (
    BytesAgent,
    CountingAgent,
    GatedAgent,
    ScriptedAgent,
    StubbornAgent,
    explained_error,
    leaky_error,
)
from .host import MemoryHost


def statuses(host: MemoryHost, session_id: str) -> list[str]:
    return [e.data["status"] for e in host.events(session_id, Kind.AGENT_STATUS)]


def reply_workers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("tidings-replies-")]


async def started_reply(host: MemoryHost, session_id: str) -> str:
    """The id of the session's assistant message, once it exists."""
    await host.wait_until(lambda: host.replies(session_id))
    return host.replies(session_id)[-1]


async def test_a_reply_logs_processing_created_completed_then_idle_around_its_stream(
    host: MemoryHost, runner: AgentRunner
) -> None:
    trigger = await host.post("s_1", "hello big world")
    runner.submit("s_1", EchoAgent(delay_ms=0), trigger)
    await host.wait_idle("s_1")

    assert host.kinds("s_1") == [
        Kind.MESSAGE_CREATED,
        Kind.AGENT_STATUS,
        Kind.MESSAGE_CREATED,
        Kind.MESSAGE_COMPLETED,
        Kind.AGENT_STATUS,
    ]
    assert statuses(host, "s_1") == ["processing", "idle"]
    created = host.events("s_1")[2]
    message = created.data["message"]
    assert message["id"] == f"m_{created.seq}"
    assert {k: message[k] for k in ("role", "author", "content", "is_code", "status")} == {
        "role": "assistant",
        "author": "echo",
        "content": "",
        "is_code": False,
        "status": "streaming",
    }
    assert created.author == "echo"
    completed = host.events("s_1", Kind.MESSAGE_COMPLETED)[0]
    assert completed.data == {"message_id": message["id"], "content": "echo: hello big world"}
    assert [f.offset for f in host.frames] == [0, 6, 12, 16]
    assert host.streamed("s_1", message["id"]) == completed.data["content"]
    # Every frame goes out after the message exists and before it completes.
    order = [kind for what, kind in host.timeline if what == "event" or kind == message["id"]]
    streams = [i for i, kind in enumerate(order) if kind == message["id"]]
    assert order.index(Kind.MESSAGE_COMPLETED) > max(streams)
    assert order.index(Kind.MESSAGE_CREATED, 1) < min(streams)


async def test_submit_returns_before_anything_is_appended(
    host: MemoryHost, runner: AgentRunner
) -> None:
    trigger = await host.post("s_1", "quick")
    before = host.kinds("s_1")
    runner.submit("s_1", EchoAgent(delay_ms=0), trigger)
    assert host.kinds("s_1") == before
    assert host.frames == []
    await host.wait_idle("s_1")


async def test_stream_offsets_count_code_points(host: MemoryHost, runner: AgentRunner) -> None:
    trigger = await host.post("s_1", "emoji please")
    runner.submit("s_1", ScriptedAgent(["🎉é", "ab", "", "😀!"]), trigger)
    await host.wait_idle("s_1")
    assert [(f.offset, f.text) for f in host.frames] == [(0, "🎉é"), (2, "ab"), (4, "😀!")]
    completed = host.events("s_1", Kind.MESSAGE_COMPLETED)[0]
    assert completed.data["content"] == "🎉éab😀!"


async def test_usage_reported_by_the_agent_ends_up_in_message_completed(
    host: MemoryHost, runner: AgentRunner
) -> None:
    trigger = await host.post("s_1", "count")
    usage = Usage(prompt_tokens=12, completion_tokens=3)
    runner.submit("s_1", ScriptedAgent(["one ", "two"], usage=usage), trigger)
    await host.wait_idle("s_1")
    completed = host.events("s_1", Kind.MESSAGE_COMPLETED)[0]
    assert completed.data["usage"] == {"prompt_tokens": 12, "completion_tokens": 3}
    assert completed.data["content"] == "one two"


async def test_the_agent_sees_the_conversation_the_cards_and_its_trigger(
    host: MemoryHost, runner: AgentRunner
) -> None:
    await host.add_card("s_1", "Spec", "The answer is 42.", "spec.md")
    await host.post("s_1", "first", author="bob")
    trigger = await host.post("s_1", "second")
    agent = ScriptedAgent(["ok"])
    runner.submit("s_1", agent, trigger)
    await host.wait_idle("s_1")
    (context,) = agent.contexts
    assert context.session_id == "s_1"
    assert [m["content"] for m in context.messages] == ["first", "second"]
    assert context.cards[0]["title"] == "Spec"
    assert context.trigger == trigger.data["message"]


async def test_partial_content_is_saved_coalesced_not_once_per_chunk(host: MemoryHost) -> None:
    runner = AgentRunner(host, partial_interval_s=0.05)
    chunks = [f"w{i} " for i in range(100)]
    trigger = await host.post("s_1", "long")
    runner.submit("s_1", ScriptedAgent(chunks, delay_s=0.002), trigger)
    await host.wait_idle("s_1")
    await runner.close()

    saved = [content for _, _, content in host.partials]
    assert 1 <= len(saved) <= len(chunks) // 4
    full = "".join(chunks)
    assert all(full.startswith(content) and content for content in saved)
    assert saved == sorted(saved, key=len)


async def test_partial_is_the_content_so_far_while_streaming_and_none_after(
    host: MemoryHost, runner: AgentRunner
) -> None:
    agent = GatedAgent(["Hel", "lo", " there"])
    trigger = await host.post("s_1", "hi")
    runner.submit("s_1", agent, trigger)
    message_id = await started_reply(host, "s_1")
    assert runner.partial("s_1", message_id) == ""

    agent.step(2)
    await host.wait_until(lambda: len(host.frames) == 2)
    assert runner.partial("s_1", message_id) == "Hello"
    await host.wait_until(lambda: host.partials)
    assert host.partials[0][:2] == ("s_1", message_id)
    assert host.partials[0][2] in ("Hel", "Hello")

    agent.step()
    await host.wait_idle("s_1")
    assert runner.partial("s_1", message_id) is None
    assert runner.partial("s_1", "m_999") is None


async def test_cancel_stops_a_running_reply_as_cancelled_and_idle(
    host: MemoryHost, runner: AgentRunner
) -> None:
    agent = GatedAgent(["a", "b", "c"])
    trigger = await host.post("s_1", "go")
    runner.submit("s_1", agent, trigger)
    message_id = await started_reply(host, "s_1")
    agent.step()
    await host.wait_until(lambda: host.frames)

    assert await runner.cancel("s_1", message_id) is True
    await host.wait_idle("s_1")

    end = host.end("s_1", message_id)
    assert end is not None
    assert end.kind == Kind.MESSAGE_FAILED
    assert end.data == {"message_id": message_id, "error": "cancelled"}
    assert statuses(host, "s_1") == ["processing", "idle"]
    assert host.streamed("s_1", message_id) == "a"
    assert agent.closed
    assert await runner.cancel("s_1", message_id) is False


async def test_cancel_of_a_reply_that_is_not_running_returns_false(runner: AgentRunner) -> None:
    assert await runner.cancel("s_1", "m_1") is False


async def test_an_agent_that_raises_fails_cleanly_and_the_session_keeps_working(
    host: MemoryHost, runner: AgentRunner
) -> None:
    first = await host.post("s_1", "break")
    runner.submit("s_1", ScriptedAgent(["partial "], error=leaky_error()), first)
    await host.wait_idle("s_1")

    failed = host.events("s_1", Kind.MESSAGE_FAILED)[0]
    assert failed.data["error"] == "The assistant failed to reply (RuntimeError)."
    status = host.events("s_1", Kind.AGENT_STATUS)[-1]
    assert status.data == {"status": "error", "error": failed.data["error"]}
    for event in host.events("s_1"):
        assert "SECRET" not in str(event.data)
        assert "Traceback" not in str(event.data)

    second = await host.post("s_1", "again")
    runner.submit("s_1", EchoAgent(delay_ms=0), second)
    await host.wait_idle("s_1", replies=2)
    completed = host.events("s_1", Kind.MESSAGE_COMPLETED)[0]
    assert completed.data["content"] == "echo: again"
    assert statuses(host, "s_1")[-1] == "idle"


async def test_an_agent_error_shows_its_reason(host: MemoryHost, runner: AgentRunner) -> None:
    trigger = await host.post("s_1", "please")
    runner.submit("s_1", ScriptedAgent([], error=explained_error()), trigger)
    await host.wait_idle("s_1")
    failed = host.events("s_1", Kind.MESSAGE_FAILED)[0]
    assert failed.data["error"] == "The assistant failed to reply (the model is overloaded)."


async def test_an_agent_yielding_something_else_than_text_fails_its_reply(
    host: MemoryHost, runner: AgentRunner
) -> None:
    runner.submit("s_1", BytesAgent(), await host.post("s_1", "hi"))
    await host.wait_idle("s_1")
    failed = host.events("s_1", Kind.MESSAGE_FAILED)[0]
    assert failed.data["error"] == "The assistant failed to reply (TypeError)."
    assert host.frames == []


async def test_a_reply_that_takes_too_long_times_out(host: MemoryHost) -> None:
    runner = AgentRunner(host, timeout_s=0.2)
    trigger = await host.post("s_1", "think hard")
    runner.submit("s_1", StubbornAgent(), trigger)
    await host.wait_idle("s_1")
    await runner.close()
    failed = host.events("s_1", Kind.MESSAGE_FAILED)[0]
    assert failed.data["error"] == "The assistant timed out."
    assert host.events("s_1", Kind.AGENT_STATUS)[-1].data == {
        "status": "error",
        "error": "The assistant timed out.",
    }


async def test_an_agent_raising_timeout_error_is_reported_as_a_timeout(
    host: MemoryHost, runner: AgentRunner
) -> None:
    trigger = await host.post("s_1", "slow upstream")
    runner.submit("s_1", ScriptedAgent(["a"], error=TimeoutError("read timed out")), trigger)
    await host.wait_idle("s_1")
    failed = host.events("s_1", Kind.MESSAGE_FAILED)[0]
    assert failed.data["error"] == "The assistant timed out."


async def test_twenty_sessions_with_a_bound_of_four_all_complete_in_order(
    host: MemoryHost,
) -> None:
    runner = AgentRunner(host, concurrency=4)
    agent = CountingAgent()
    sessions = [f"s_{n}" for n in range(20)]
    for turn in range(3):
        for session_id in sessions:
            runner.submit(session_id, agent, await host.post(session_id, str(turn)))
    most_active = 0

    async def watch() -> None:
        nonlocal most_active
        while True:
            most_active = max(most_active, runner.active())
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        for session_id in sessions:
            await host.wait_idle(session_id, replies=3, within_s=10)
    finally:
        watcher.cancel()
    await runner.close()

    assert agent.most == 4
    assert most_active <= 4
    for session_id in sessions:
        completed = host.events(session_id, Kind.MESSAGE_COMPLETED)
        assert [e.data["content"] for e in completed] == ["re: 0", "re: 1", "re: 2"]
        for message_id, event in zip(host.replies(session_id), completed, strict=True):
            assert event.data["message_id"] == message_id
            assert host.streamed(session_id, message_id) == event.data["content"]
    assert runner.active() == 0
    assert runner.pending() == 0


async def test_a_second_message_queues_behind_the_reply_to_the_first(
    host: MemoryHost, runner: AgentRunner
) -> None:
    slow = GatedAgent(["first ", "reply"])
    runner.submit("s_1", slow, await host.post("s_1", "one"))
    runner.submit("s_1", EchoAgent(delay_ms=0), await host.post("s_1", "two"))
    await slow.started.wait()
    assert runner.pending() == 1
    assert len(host.replies("s_1")) == 1

    slow.step(2)
    await host.wait_idle("s_1", replies=2)
    assert host.kinds("s_1")[2:] == [
        Kind.AGENT_STATUS,
        Kind.MESSAGE_CREATED,
        Kind.MESSAGE_COMPLETED,
        Kind.AGENT_STATUS,
        Kind.AGENT_STATUS,
        Kind.MESSAGE_CREATED,
        Kind.MESSAGE_COMPLETED,
        Kind.AGENT_STATUS,
    ]
    contents = [e.data["content"] for e in host.events("s_1", Kind.MESSAGE_COMPLETED)]
    assert contents == ["first reply", "echo: two"]


async def test_a_session_worker_goes_away_when_its_queue_is_empty(
    host: MemoryHost, runner: AgentRunner
) -> None:
    runner.submit("s_1", EchoAgent(delay_ms=0), await host.post("s_1", "hi"))
    assert len(reply_workers()) == 1
    await host.wait_idle("s_1")
    await host.wait_until(lambda: not reply_workers())
    assert runner.active() == 0

    runner.submit("s_1", EchoAgent(delay_ms=0), await host.post("s_1", "again"))
    await host.wait_idle("s_1", replies=2)


async def test_the_end_of_a_reply_is_retried_when_the_store_hiccups(
    host: MemoryHost, runner: AgentRunner
) -> None:
    host.fail_next[Kind.MESSAGE_COMPLETED] = 2
    runner.submit("s_1", EchoAgent(delay_ms=0), await host.post("s_1", "hi"))
    await host.wait_idle("s_1")
    assert len(host.events("s_1", Kind.MESSAGE_COMPLETED)) == 1
    assert statuses(host, "s_1") == ["processing", "idle"]


async def test_a_reply_that_cannot_start_sets_the_agent_status_to_error(
    host: MemoryHost, runner: AgentRunner
) -> None:
    trigger = await host.post("s_1", "hi")
    host.fail_next[Kind.MESSAGE_CREATED] = 1
    runner.submit("s_1", EchoAgent(delay_ms=0), trigger)
    await host.wait_until(lambda: len(statuses(host, "s_1")) == 2)
    assert statuses(host, "s_1") == ["processing", "error"]
    assert host.replies("s_1") == []

    runner.submit("s_1", EchoAgent(delay_ms=0), await host.post("s_1", "again"))
    await host.wait_until(lambda: host.events("s_1", Kind.MESSAGE_COMPLETED))


async def test_recover_marks_orphaned_replies_interrupted_once(
    host: MemoryHost, runner: AgentRunner
) -> None:
    orphans = []
    for session_id in ("s_1", "s_2"):
        await host.post(session_id, "hi")
        created = await host.append(
            session_id,
            Draft(
                kind=Kind.MESSAGE_CREATED,
                author="echo",
                data={
                    "message": {
                        "role": "assistant",
                        "author": "echo",
                        "content": "",
                        "is_code": False,
                        "status": "streaming",
                    }
                },
            ),
        )
        orphans.append((session_id, created.data["message"]["id"]))

    await runner.recover(orphans)
    await runner.recover(orphans)  # a second node recovering the same replies

    for session_id, message_id in orphans:
        failed = host.events(session_id, Kind.MESSAGE_FAILED)
        assert [e.data for e in failed] == [{"message_id": message_id, "error": "interrupted"}]
        assert statuses(host, session_id) == ["idle"]


async def test_close_interrupts_running_replies_and_drops_queued_ones(
    host: MemoryHost,
) -> None:
    runner = AgentRunner(host)
    agent = GatedAgent(["a", "b"])
    runner.submit("s_1", agent, await host.post("s_1", "one"))
    runner.submit("s_1", EchoAgent(delay_ms=0), await host.post("s_1", "two"))
    message_id = await started_reply(host, "s_1")
    agent.step()
    await host.wait_until(lambda: host.frames)

    await runner.close()

    end = host.end("s_1", message_id)
    assert end is not None
    assert end.data == {"message_id": message_id, "error": "interrupted"}
    assert statuses(host, "s_1") == ["processing", "idle"]
    assert host.replies("s_1") == [message_id]
    assert agent.closed
    assert reply_workers() == []

    runner.submit("s_1", EchoAgent(delay_ms=0), await host.post("s_1", "three"))
    assert reply_workers() == []


async def test_close_returns_even_when_the_store_is_down(host: MemoryHost) -> None:
    runner = AgentRunner(host)
    agent = GatedAgent(["a", "b"])
    runner.submit("s_1", agent, await host.post("s_1", "one"))
    message_id = await started_reply(host, "s_1")
    await agent.started.wait()
    host.down = set(Kind)

    await runner.close(grace_s=1)

    assert host.end("s_1", message_id) is None  # left for `recover` after the restart
    assert agent.closed
    assert reply_workers() == []
