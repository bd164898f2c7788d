"""Agent factories loaded by import path in the loader's tests."""

from __future__ import annotations

from collections.abc import Mapping

from tidings.agents.echo import EchoAgent


class GreeterAgent(EchoAgent):
    """An echo with its own name and greeting, configured from the server's settings."""

    name = "greeter"

    def __init__(self, greeting: str) -> None:
        super().__init__(delay_ms=0)
        self.greeting = greeting


def make_agent(settings: Mapping[str, str]) -> GreeterAgent:
    return GreeterAgent(settings.get("GREETER_GREETING", "hello"))


def make_nothing(settings: Mapping[str, str]) -> object:
    return object()


def make_broken(settings: Mapping[str, str]) -> GreeterAgent:
    raise KeyError("GREETER_GREETING")


NOT_CALLABLE = 42
