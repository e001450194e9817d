"""Replies in the Cohere v2 Chat and Embed wire format, for :class:`~fakes.upstream.FakeUpstream`.

Shapes follow Cohere's v2 API reference: chat replies carry ``message.content`` parts,
``message.tool_calls`` with string ``arguments``, ``finish_reason`` in capitals and ``usage``
with both ``billed_units`` and ``tokens``; streams are SSE events whose ``event:`` line and JSON
``type`` both name them; errors are ``{"message": ...}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from fakes.upstream import Recorded, Reply

MODEL = "command-a-03-2025"
EMBED_MODEL = "embed-v4.0"


def usage(input_tokens: int = 9, output_tokens: int = 5, *, billed_input: int = 3) -> dict[str, Any]:
    return {
        "billed_units": {"input_tokens": billed_input, "output_tokens": output_tokens},
        "tokens": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_reply(
    text: str | None = None,
    *,
    tool_calls: Sequence[dict[str, Any]] = (),
    tool_plan: str | None = None,
    finish_reason: str = "COMPLETE",
    usage_: dict[str, Any] | None = None,
) -> Reply:
    message: dict[str, Any] = {"role": "assistant"}
    if text is not None:
        message["content"] = [{"type": "text", "text": text}]
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    if tool_plan is not None:
        message["tool_plan"] = tool_plan
    body = {
        "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        "finish_reason": finish_reason,
        "message": message,
        "usage": usage_ or usage(),
    }
    return Reply.json(body)


def error_reply(status: int, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply.json({"id": "5fd0c0a1-37a4-4bd7-a1f6-1b6f3a6d2a1b", "message": text}, status=status, headers=headers)


# --------------------------------------------------------------------------- stream events


def event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {orjson.dumps({'type': kind, **data}).decode()}\n\n"


def message_start(message_id: str = "29f14a5a-11de-4cae-9800-25e4747408ea") -> str:
    empty = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    return event("message-start", {"id": message_id, "delta": {"message": empty}})


def content_events(pieces: Iterable[str], index: int = 0) -> list[str]:
    out = [event("content-start", {"index": index, "delta": {"message": {"content": {"type": "text", "text": ""}}}})]
    out += [event("content-delta", {"index": index, "delta": {"message": {"content": {"text": p}}}}) for p in pieces]
    out.append(event("content-end", {"index": index}))
    return out


def tool_plan_events(pieces: Iterable[str]) -> list[str]:
    return [event("tool-plan-delta", {"delta": {"message": {"tool_plan": p}}}) for p in pieces]


def tool_call_events(index: int, call_id: str, name: str, argument_pieces: Iterable[str]) -> list[str]:
    start = {"tool_calls": tool_call(call_id, name, "")}
    out = [event("tool-call-start", {"index": index, "delta": {"message": start}})]
    for piece in argument_pieces:
        delta = {"message": {"tool_calls": {"function": {"arguments": piece}}}}
        out.append(event("tool-call-delta", {"index": index, "delta": delta}))
    out.append(event("tool-call-end", {"index": index}))
    return out


def message_end(finish_reason: str = "COMPLETE", usage_: dict[str, Any] | None = None, **extra: Any) -> str:
    return event("message-end", {"delta": {"finish_reason": finish_reason, "usage": usage_ or usage(), **extra}})


def text_stream(pieces: Iterable[str], *, finish_reason: str = "COMPLETE") -> list[str]:
    return [message_start(), *content_events(pieces), message_end(finish_reason)]


# --------------------------------------------------------------------------- embeddings


def embed_handler(dimensions: int = 3) -> Any:
    """A handler answering ``/v2/embed`` with a vector per text that encodes the text's length and position."""

    def handle(request: Recorded) -> Reply:
        body = request.json()
        texts = body["texts"]
        vectors = [[float(len(t)), float(i)] + [0.5] * (dimensions - 2) for i, t in enumerate(texts)]
        return Reply.json(
            {
                "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
                "embeddings": {"float": vectors},
                "texts": texts,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 2 * len(texts)}},
                "response_type": "embeddings_by_type",
            }
        )

    return handle
