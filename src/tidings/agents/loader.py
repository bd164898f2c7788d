"""Turn an agent spec (`TIDINGS_AGENT`, or a session's `agent` field) into an agent.

Specs: `none` (no assistant), `echo`, `openai`, or `package.module:Factory` for a
third-party agent, where `Factory(settings)` returns the agent. `settings` are the
server's settings (the `TIDINGS_*` environment variables and flags).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from tidings.agents.base import Agent
from tidings.agents.echo import EchoAgent

BUILT_IN = ("none", "echo", "openai")

_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _int_setting(settings: Mapping[str, str], name: str, default: int) -> int:
    raw = settings.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be zero or more, not {value}")
    return value


def _float_setting(settings: Mapping[str, str], name: str, default: float) -> float:
    raw = settings.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be more than zero, not {value}")
    return value


def _openai(settings: Mapping[str, str]) -> Agent:
    # Imported here: the SDK takes about a second to import, and most servers run echo.
    from tidings.agents.openai_agent import OpenAIAgent

    model = settings.get("TIDINGS_OPENAI_MODEL", "").strip()
    if not model:
        raise ValueError("the openai agent needs TIDINGS_OPENAI_MODEL (the model name)")
    return OpenAIAgent(
        base_url=settings.get("TIDINGS_OPENAI_BASE_URL", "").strip() or None,
        api_key=settings.get("TIDINGS_OPENAI_API_KEY", "").strip() or None,
        model=model,
        system_prompt=settings.get("TIDINGS_OPENAI_SYSTEM_PROMPT") or None,
        timeout_s=_float_setting(settings, "TIDINGS_OPENAI_TIMEOUT_S", 120.0),
    )


def _import_factory(spec: str) -> Callable[[Mapping[str, str]], Any]:
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"agent {spec!r}: cannot import module {module_name!r}: {error}"
        ) from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"agent {spec!r}: {module_name} has no {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"agent {spec!r}: {attribute!r} is not callable")
    factory: Callable[[Mapping[str, str]], Any] = target
    return factory


def load_agent(spec: str, settings: Mapping[str, str]) -> Agent | None:
    """The agent named by `spec`, or None for `none`; `ValueError` on a bad spec."""
    name = spec.strip()
    if name == "none":
        return None
    if name == "echo":
        return EchoAgent(delay_ms=_int_setting(settings, "TIDINGS_ECHO_DELAY_MS", 20))
    if name == "openai":
        return _openai(settings)
    if not _IMPORT_PATH.fullmatch(name):
        raise ValueError(
            f"unknown agent {spec!r}: use one of {', '.join(BUILT_IN)} "
            "or an import path such as 'package.module:Factory'"
        )
    factory = _import_factory(name)
    try:
        agent = factory(settings)
    except Exception as error:
        raise ValueError(f"agent {spec!r}: the factory failed: {error!r}") from error
    if not isinstance(agent, Agent) or not isinstance(agent.name, str):
        raise ValueError(
            f"agent {spec!r}: the factory returned {type(agent).__name__}, "
            "not an agent (an object with a `name` and a `reply(context)` method)"
        )
    return agent
