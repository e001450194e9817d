"""An in-memory Provider whose behaviour each test scripts: answers, failures, delays.

It implements the Provider protocol directly (no HTTP), so router tests exercise routing
policy alone; wire formats are covered by the provider tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from polyroute import errors
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.types import ChatRequest, ChatResponse, ChatStreamEvent, EmbeddingResponse, Message, ToolCall, Usage


@dataclass
class Step:
    """One scripted call: raise ``error`` or answer ``tokens``, with optional delays."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", ", ", "world"])
    error: errors.PolyrouteError | None = None
    delay: float = 0.0                 # before the first token / before answering
    gap: float = 0.0                   # between tokens
    fail_after: int | None = None      # raise ``error`` after this many tokens
    finish: bool = True                # emit the end event
    tool_calls: list[ToolCall] = field(default_factory=list)  # streamed before the tokens
    usage: Usage | None = None         # reported token counts (default: 3 prompt + one per token)
    usage_first: bool = False          # stream: report usage at once, before the delay (as some servers do)

    def counts(self) -> Usage:
        if self.usage is not None:
            return self.usage
        return Usage(prompt_tokens=3, completion_tokens=len(self.tokens), total_tokens=3 + len(self.tokens))


class ScriptedProvider:
    capabilities = Capabilities(embeddings=True, tools=True, json_output=True)

    def __init__(self, name: str, steps: list[Step] | None = None, *, missing: str | None = None) -> None:
        self.name = name
        self.steps = list(steps or [])
        self.calls: list[tuple[str, ChatRequest | list[str]]] = []
        self.missing = missing
        self.in_flight = 0
        self.peak = 0
        self.closed = False
        self.on_call: Callable[[], Any] | None = None
        #: calls abandoned by the router (hedge losers, closed streams) before they finished
        self.cancelled = 0

    def missing_config(self) -> str | None:
        return self.missing

    def _next(self) -> Step:
        return self.steps.pop(0) if self.steps else Step()

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        self.calls.append((model, request))
        step = self._next()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if step.delay:
                await asyncio.sleep(step.delay)
            if step.error is not None:
                raise step.error
            return ChatResponse(
                message=Message.assistant("".join(step.tokens)),
                usage=step.counts(),
                provider=self.name,
                model=model,
            )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        self.calls.append((model, request))
        step = self._next()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if step.usage_first:
                yield ChatStreamEvent("usage", usage=step.counts(), provider=self.name, model=model)
            if step.delay:
                await asyncio.sleep(step.delay)
            if step.error is not None and step.fail_after in (None, 0):
                raise step.error
            for call in step.tool_calls:
                yield ChatStreamEvent("tool_call", tool_call=call, provider=self.name, model=model)
            for i, token in enumerate(step.tokens):
                if step.gap and i:
                    await asyncio.sleep(step.gap)
                yield ChatStreamEvent("token", delta=token, provider=self.name, model=model)
                if step.error is not None and step.fail_after == i + 1:
                    raise step.error
            if step.finish:
                yield ChatStreamEvent("usage", usage=step.counts(), provider=self.name, model=model)
                yield ChatStreamEvent("end", finish_reason="stop", provider=self.name, model=model)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def embed(self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None) -> EmbeddingResponse:
        self.calls.append((model, inputs))
        step = self._next()
        if step.error is not None:
            raise step.error
        return EmbeddingResponse(vectors=[[float(len(t)), float(i)] for i, t in enumerate(inputs)], provider=self.name, model=model)

    async def aclose(self) -> None:
        self.closed = True


def unavailable(provider: str = "p", status: int = 503) -> errors.ProviderUnavailableError:
    return errors.ProviderUnavailableError("down", provider=provider, model="m", status=status)
