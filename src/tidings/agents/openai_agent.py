"""The `openai` agent: any OpenAI-compatible chat-completions endpoint, streamed.

Works with OpenAI, OpenRouter, vLLM, llama.cpp's server, Ollama and the like, through the
official SDK's async client (never a blocking request inside the event loop). The module
is not called `openai.py` so that it can never shadow the SDK.

Errors become `AgentError` with a short reason fit for users, or `TimeoutError`: the SDK's
own messages can quote the request or part of the key, so they go to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from tidings.agents.base import AgentContext, AgentError, Usage

log = logging.getLogger("tidings.agents.openai")

#: Sent as the key when none is configured: local servers ignore it, the SDK wants one.
NO_KEY = "not-needed"


def cards_prompt(cards: Iterable[dict[str, Any]]) -> str | None:
    """The session's context cards as one block of system context (None if no cards)."""
    blocks = []
    for card in cards:
        title = str(card.get("title") or "Untitled")
        source = card.get("source")
        heading = f"## {title} (source: {source})" if source else f"## {title}"
        blocks.append(f"{heading}\n{card.get('content', '')}")
    if not blocks:
        return None
    return "Context cards shared in this session:\n\n" + "\n\n".join(blocks)


def chat_messages(
    context: AgentContext, system_prompt: str | None
) -> list[ChatCompletionMessageParam]:
    """The request's messages: system prompt, cards, then the conversation, oldest first.

    Several people may talk in one session, so a user message carries its author's name.
    Unfinished replies (still streaming, or failed with nothing said) are left out.
    """
    messages: list[ChatCompletionMessageParam] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    cards = cards_prompt(context.cards)
    if cards:
        messages.append({"role": "system", "content": cards})
    history = list(context.messages)
    trigger_id = context.trigger.get("id")
    if trigger_id is None or all(m.get("id") != trigger_id for m in history):
        history.append(context.trigger)
    for message in history:
        content = str(message.get("content") or "")
        role = message.get("role")
        if role == "assistant":
            if message.get("status") == "streaming" or not content:
                continue
            messages.append({"role": "assistant", "content": content})
        elif role == "system":
            messages.append({"role": "system", "content": content})
        else:
            author = message.get("author")
            text = f"{author}: {content}" if author else content
            messages.append({"role": "user", "content": text})
    return messages


def _reason(error: openai.OpenAIError) -> Exception:
    """A user-safe exception for an SDK error (the original goes to the log)."""
    if isinstance(error, openai.APITimeoutError):
        return TimeoutError("the model server did not answer in time")
    if isinstance(error, openai.APIConnectionError):
        return AgentError("lost the connection to the model server")
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return AgentError("the model server refused the configured credentials")
    if isinstance(error, openai.RateLimitError):
        return AgentError("the model server is rate limiting requests")
    if isinstance(error, openai.NotFoundError):
        return AgentError("the model server does not know the configured model")
    if isinstance(error, openai.APIStatusError):
        return AgentError(f"the model server answered HTTP {error.status_code}")
    return AgentError("the model server reported an error")


class OpenAIAgent:
    name = "openai"

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        model: str,
        system_prompt: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        if not model:
            raise ValueError("the openai agent needs a model name")
        self.model = model
        self.system_prompt = system_prompt
        # `timeout_s` bounds each step (connect, and each read between chunks), so a server
        # that stops sending mid-reply fails with a timeout; the runner bounds the whole.
        self._client = AsyncOpenAI(
            base_url=base_url or None,
            api_key=api_key or NO_KEY,
            timeout=timeout_s,
            max_retries=max_retries,
        )

    def __repr__(self) -> str:  # never the key
        return f"OpenAIAgent(base_url={str(self._client.base_url)!r}, model={self.model!r})"

    async def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]:
        try:
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=chat_messages(context, self.system_prompt),
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                async for chunk in stream:
                    if chunk.choices:
                        text = chunk.choices[0].delta.content
                        if text:
                            yield text
                    if chunk.usage is not None:
                        yield Usage(
                            prompt_tokens=chunk.usage.prompt_tokens or 0,
                            completion_tokens=chunk.usage.completion_tokens or 0,
                        )
        except openai.OpenAIError as error:
            log.warning(
                "openai agent: %s for session %s (model %s)",
                type(error).__name__,
                context.session_id,
                self.model,
                exc_info=True,
            )
            raise _reason(error) from error

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.close()
