"""Assistant agents and the runner that streams their replies into sessions."""

from tidings.agents.base import Agent, AgentContext, AgentError, ReplyHost, Usage, close_agent
from tidings.agents.loader import load_agent
from tidings.agents.runner import AgentRunner

__all__ = [
    "Agent",
    "AgentContext",
    "AgentError",
    "AgentRunner",
    "ReplyHost",
    "Usage",
    "close_agent",
    "load_agent",
]
