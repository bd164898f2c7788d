from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.agents.base import AgentContext, Usage
from tidings.agents.echo import EchoAgent, echo_chunks


def context_for(content: str) -> AgentContext:
    trigger = {"id": "m_1", "role": "user", "author": "alice", "content": content}
    return AgentContext(session_id="s_1", messages=[trigger], cards=[], trigger=trigger)


async def collect(agent: EchoAgent, content: str) -> list[str | Usage]:
    return [item async for item in agent.reply(context_for(content))]


@given(st.text())
def test_echo_chunks_join_back_to_exactly_the_text(text: str) -> None:
    chunks = echo_chunks(text)
    assert "".join(chunks) == text
    assert all(chunks)


@given(st.text())
def test_each_echo_chunk_is_one_word_with_the_whitespace_after_it(text: str) -> None:
    for chunk in echo_chunks(text)[1:]:
        word = chunk.rstrip()
        assert word
        assert not any(c.isspace() for c in word)


async def test_echo_replies_echo_and_the_content_a_word_at_a_time() -> None:
    chunks = await collect(EchoAgent(delay_ms=0), "Hello  big\nworld ")
    assert chunks == ["echo: ", "Hello  ", "big\n", "world "]


async def test_echo_of_an_empty_message_is_just_the_prefix() -> None:
    assert await collect(EchoAgent(delay_ms=0), "") == ["echo: "]


async def test_echo_keeps_unicode_and_code_exactly() -> None:
    content = "déjà vu 🎉\tdef f(x):\n    return x"
    chunks = await collect(EchoAgent(delay_ms=1), content)
    assert "".join(str(c) for c in chunks) == "echo: " + content


def test_echo_refuses_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay_ms"):
        EchoAgent(delay_ms=-1)
