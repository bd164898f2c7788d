from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tidings.agents.base import AgentContext
from tidings.agents.openai_agent import OpenAIAgent, chat_messages
from tidings.agents.runner import AgentRunner
from tidings.core.model import Event, Kind

from .fake_openai import PROMPT_TOKENS, WORDS, FakeOpenAI
from .host import MemoryHost

SECRET_KEY = "sk-test-secret"

MakeAgent = Callable[..., OpenAIAgent]
Reply = Callable[..., Awaitable[Event]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_agent(fake: FakeOpenAI) -> AsyncIterator[MakeAgent]:
    agents: list[OpenAIAgent] = []

    def make(model: str = "fake-model", timeout_s: float = 10.0) -> OpenAIAgent:
        agent = OpenAIAgent(
            base_url=fake.base_url,
            api_key=SECRET_KEY,
            model=model,
            system_prompt="Be brief.",
            timeout_s=timeout_s,
            max_retries=0,
        )
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.aclose()


@pytest.fixture
def reply(host: MemoryHost) -> Reply:
    """Run one reply of `agent` to a user message through a runner; its end event."""

    async def run(agent: OpenAIAgent, *, timeout_s: float = 10.0) -> Event:
        runner = AgentRunner(host, timeout_s=timeout_s, partial_interval_s=0.01)
        try:
            runner.submit("s_1", agent, await host.post("s_1", "Say hello"))
            await host.wait_idle("s_1")
        finally:
            await runner.close()
        (message_id,) = host.replies("s_1")
        end = host.end("s_1", message_id)
        assert end is not None
        return end

    return run


def assert_nothing_leaked(host: MemoryHost) -> None:
    for event in host.events("s_1"):
        text = str(event.data)
        assert "sk-" not in text
        assert "Traceback" not in text
        assert "127.0.0.1" not in text


async def test_the_openai_agent_streams_the_reply_and_its_usage(
    host: MemoryHost, fake: FakeOpenAI, make_agent: MakeAgent, reply: Reply
) -> None:
    end = await reply(make_agent())

    assert end.kind == Kind.MESSAGE_COMPLETED
    assert end.data["content"] == "".join(WORDS)
    assert end.data["usage"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(WORDS)}
    assert [frame.text for frame in host.frames] == WORDS
    assert host.streamed("s_1", end.data["message_id"]) == end.data["content"]

    (request,) = fake.requests
    assert request["model"] == "fake-model"
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "alice: Say hello"},
    ]
    assert fake.authorizations == [f"Bearer {SECRET_KEY}"]


async def test_a_server_dropping_the_connection_mid_stream_fails_the_reply_cleanly(
    host: MemoryHost, make_agent: MakeAgent, reply: Reply
) -> None:
    end = await reply(make_agent("fail-midstream"))

    assert end.kind == Kind.MESSAGE_FAILED
    assert end.data["error"] == (
        "The assistant failed to reply (lost the connection to the model server)."
    )
    assert host.streamed("s_1", end.data["message_id"]) == "".join(WORDS[:3])
    assert host.events("s_1", Kind.AGENT_STATUS)[-1].data["status"] == "error"
    assert_nothing_leaked(host)


async def test_an_error_event_in_the_stream_fails_the_reply_without_its_message(
    host: MemoryHost, make_agent: MakeAgent, reply: Reply
) -> None:
    end = await reply(make_agent("error-event"))

    assert end.kind == Kind.MESSAGE_FAILED
    assert (
        end.data["error"] == "The assistant failed to reply (the model server reported an error)."
    )
    assert_nothing_leaked(host)


async def test_a_server_that_stalls_makes_the_agent_time_out(
    host: MemoryHost, make_agent: MakeAgent, reply: Reply
) -> None:
    end = await reply(make_agent("stall", timeout_s=0.3))

    assert end.kind == Kind.MESSAGE_FAILED
    assert end.data["error"] == "The assistant timed out."
    assert host.streamed("s_1", end.data["message_id"]) == "".join(WORDS[:2])


async def test_a_server_that_stalls_past_the_reply_timeout_is_cut_off_by_the_runner(
    host: MemoryHost, make_agent: MakeAgent, reply: Reply
) -> None:
    end = await reply(make_agent("stall", timeout_s=30), timeout_s=0.3)

    assert end.kind == Kind.MESSAGE_FAILED
    assert end.data["error"] == "The assistant timed out."


async def test_refused_credentials_fail_the_reply_without_quoting_the_key(
    host: MemoryHost, make_agent: MakeAgent, reply: Reply
) -> None:
    end = await reply(make_agent("unauthorized"))

    assert end.data["error"] == (
        "The assistant failed to reply (the model server refused the configured credentials)."
    )
    assert_nothing_leaked(host)


async def test_an_unreachable_server_fails_the_reply(host: MemoryHost, reply: Reply) -> None:
    agent = OpenAIAgent(
        base_url="http://127.0.0.1:9/v1", api_key=SECRET_KEY, model="m", max_retries=0
    )
    try:
        end = await reply(agent)
    finally:
        await agent.aclose()
    assert end.data["error"] == (
        "The assistant failed to reply (lost the connection to the model server)."
    )


async def test_the_agent_repr_never_shows_the_key(make_agent: MakeAgent) -> None:
    assert SECRET_KEY not in repr(make_agent())


def test_the_request_holds_the_prompt_the_cards_and_the_conversation_in_order() -> None:
    trigger = {"id": "m_5", "role": "user", "author": "alice", "content": "And now?"}
    context = AgentContext(
        session_id="s_1",
        messages=[
            {"id": "m_2", "role": "user", "author": "bob", "content": "What is 6 x 7?"},
            {
                "id": "m_3",
                "role": "assistant",
                "author": "openai",
                "content": "42",
                "status": "complete",
            },
            {
                "id": "m_4",
                "role": "assistant",
                "author": "openai",
                "content": "",
                "status": "streaming",
            },
            {"id": "m_6", "role": "system", "author": "tidings", "content": "Carol joined."},
        ],
        cards=[
            {"title": "Spec", "content": "Answer in French.", "source": "spec.md"},
            {"title": "Notes", "content": "Be nice.", "source": ""},
        ],
        trigger=trigger,
    )
    assert chat_messages(context, "You help a team.") == [
        {"role": "system", "content": "You help a team."},
        {
            "role": "system",
            "content": "Context cards shared in this session:\n\n"
            "## Spec (source: spec.md)\nAnswer in French.\n\n## Notes\nBe nice.",
        },
        {"role": "user", "content": "bob: What is 6 x 7?"},
        {"role": "assistant", "content": "42"},
        {"role": "system", "content": "Carol joined."},
        {"role": "user", "content": "alice: And now?"},
    ]


def test_a_trigger_already_in_the_history_is_not_repeated() -> None:
    trigger = {"id": "m_2", "role": "user", "author": "bob", "content": "Hi"}
    context = AgentContext(session_id="s_1", messages=[trigger], cards=[], trigger=trigger)
    assert chat_messages(context, None) == [{"role": "user", "content": "bob: Hi"}]


def test_the_agent_needs_a_model_name() -> None:
    with pytest.raises(ValueError, match="model"):
        OpenAIAgent(base_url=None, api_key=None, model="")
