from __future__ import annotations

import pytest

from tidings.agents.base import close_agent
from tidings.agents.echo import EchoAgent
from tidings.agents.loader import load_agent
from tidings.agents.openai_agent import OpenAIAgent

from . import factory

FACTORY = factory.__name__  # the import path, whichever way pytest imported the tests


def test_none_means_no_assistant() -> None:
    assert load_agent("none", {}) is None


def test_echo_takes_its_delay_from_the_settings() -> None:
    agent = load_agent("echo", {"TIDINGS_ECHO_DELAY_MS": "5"})
    assert isinstance(agent, EchoAgent)
    assert agent.name == "echo"
    assert agent.delay_ms == 5


def test_echo_waits_twenty_milliseconds_by_default() -> None:
    agent = load_agent(" echo ", {})
    assert isinstance(agent, EchoAgent)
    assert agent.delay_ms == 20


@pytest.mark.parametrize("delay", ["soon", "-1", "1.5"])
def test_a_bad_echo_delay_is_refused_by_name(delay: str) -> None:
    with pytest.raises(ValueError, match="TIDINGS_ECHO_DELAY_MS"):
        load_agent("echo", {"TIDINGS_ECHO_DELAY_MS": delay})


async def test_openai_is_configured_from_the_settings() -> None:
    settings = {
        "TIDINGS_OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
        "TIDINGS_OPENAI_API_KEY": "sk-local",
        "TIDINGS_OPENAI_MODEL": "qwen2.5-7b-instruct",
        "TIDINGS_OPENAI_SYSTEM_PROMPT": "Be brief.",
    }
    agent = load_agent("openai", settings)
    assert isinstance(agent, OpenAIAgent)
    try:
        assert agent.name == "openai"
        assert agent.model == "qwen2.5-7b-instruct"
        assert agent.system_prompt == "Be brief."
        assert "127.0.0.1:8000/v1" in repr(agent)
        assert "sk-local" not in repr(agent)
    finally:
        await close_agent(agent)


def test_openai_without_a_model_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="TIDINGS_OPENAI_MODEL"):
        load_agent("openai", {"TIDINGS_OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"})


async def test_a_third_party_agent_loads_by_import_path_with_the_settings() -> None:
    agent = load_agent(f"{FACTORY}:make_agent", {"GREETER_GREETING": "ahoy"})
    assert isinstance(agent, factory.GreeterAgent)
    assert agent.name == "greeter"
    assert agent.greeting == "ahoy"
    await close_agent(agent)


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("", "unknown agent"),
        ("gpt", "unknown agent"),
        ("Echo", "unknown agent"),
        ("package.module", "unknown agent"),
        ("a b:c", "unknown agent"),
        ("tidings_no_such_module:make", "cannot import"),
        (f"{FACTORY}:missing", "has no"),
        (f"{FACTORY}:NOT_CALLABLE", "not callable"),
        (f"{FACTORY}:make_nothing", "not an agent"),
        (f"{FACTORY}:make_broken", "the factory failed"),
    ],
)
def test_a_bad_spec_is_a_clear_value_error(spec: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        load_agent(spec, {})
