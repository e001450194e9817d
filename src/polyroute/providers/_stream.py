"""Shared pieces for turning a provider's SSE events into our stream events.

:class:`HTTPProvider.relay_sse <polyroute.providers._http.HTTPProvider.relay_sse>` drives a
:class:`StreamParser`; :class:`JSONStreamParser` is the common base for wire formats whose
events are JSON objects named by a ``type`` field (Anthropic, Cohere).
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from polyroute import errors
from polyroute.providers._sse import SSEEvent
from polyroute.types import ChatResponse, ChatStreamEvent, FinishReason, Message, ToolCall, Usage

__all__ = ["JSONStreamParser", "StreamParser", "assistant_reply"]


class StreamParser(Protocol):
    """One call's translation of a provider's SSE events into ours, for :meth:`HTTPProvider.relay_sse`."""

    #: true once the provider's finish marker has been seen
    done: bool

    def feed(self, event: SSEEvent) -> list[ChatStreamEvent]: ...


def assistant_reply(
    provider: str,
    model: str,
    *,
    reply_id: str,
    text: str,
    tool_calls: list[ToolCall],
    finish: FinishReason,
    usage: Usage,
) -> ChatResponse:
    """A whole reply built from parts the provider module has already checked (no re-validation)."""
    message = Message.model_construct(role="assistant", content=text or None, tool_calls=tool_calls or None)
    return ChatResponse.model_construct(
        id=reply_id, message=message, finish_reason=finish, usage=usage, provider=provider, model=model
    )


class JSONStreamParser:
    """A :class:`StreamParser` for streams whose events are JSON objects named by a ``type`` field.

    Subclasses implement :meth:`handle` for one event and call :meth:`finish` at the provider's
    finish marker. Data that is not a JSON object, or that lacks a field ``handle`` looks up,
    raises ``StreamInterruptedError(malformed)``: the stream cannot be trusted past it.
    """

    __slots__ = ("done", "model", "provider")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.done = False

    def malformed(self, what: str) -> errors.StreamInterruptedError:
        return errors.StreamInterruptedError(
            f"the provider's stream could not be read: {what}",
            kind="malformed",
            provider=self.provider,
            model=self.model,
        )

    def feed(self, event: SSEEvent) -> list[ChatStreamEvent]:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise self.malformed(f"a {event.event!r} event is not valid JSON") from None
        if type(data) is not dict:
            raise self.malformed(f"a {event.event!r} event is not a JSON object")
        try:
            return self.handle(data.get("type") or event.event, data)
        except (AttributeError, TypeError, KeyError, IndexError):
            raise self.malformed(f"a {event.event!r} event does not have the documented shape") from None

    def handle(self, kind: str, data: dict[str, Any]) -> list[ChatStreamEvent]:
        """Our events for one provider event of type ``kind``."""
        raise NotImplementedError

    def finish(self, reply: ChatResponse) -> list[ChatStreamEvent]:
        """The closing ``usage`` and ``end`` events for ``reply``; the stream is then done."""
        self.done = True
        provider, model, usage = self.provider, self.model, reply.usage
        return [
            ChatStreamEvent("usage", usage=usage, provider=provider, model=model),
            ChatStreamEvent(
                "end", finish_reason=reply.finish_reason, usage=usage, response=reply, provider=provider, model=model
            ),
        ]
