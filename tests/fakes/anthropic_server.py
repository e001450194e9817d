"""Replies in the Anthropic Messages API wire format, for :class:`~fakes.upstream.FakeUpstream`.

Bodies, SSE events and error shapes follow Anthropic's documentation: a stream is
``event: <type>`` + ``data: <json>`` pairs, from ``message_start`` to ``message_stop``, with
``ping`` keep-alives and ``event: error`` for failures after the 200 was sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from fakes.upstream import Pause, Reply

MODEL = "claude-sonnet-4-5"


# --------------------------------------------------------------------------- plain replies


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def usage(
    input_tokens: int = 12, output_tokens: int = 7, *, cache_creation: int = 0, cache_read: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
    }


def message(
    content: Sequence[dict[str, Any]],
    *,
    stop_reason: str | None = "end_turn",
    usage_: dict[str, Any] | None = None,
    message_id: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_ or usage(),
    }


def message_reply(content: Sequence[dict[str, Any]], **kw: Any) -> Reply:
    return Reply.json(message(content, **kw), headers={"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"})


def error_body(error_type: str, text: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": text},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


def error_reply(status: int, error_type: str, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply.json(error_body(error_type, text), status=status, headers=headers)


# --------------------------------------------------------------------------- stream events


def event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {orjson.dumps(data).decode()}\n\n"


def message_start(*, input_tokens: int = 25, cache_read: int = 0, message_id: str = "msg_stream_01") -> str:
    start = message([], stop_reason=None, usage_=usage(input_tokens, 1, cache_read=cache_read), message_id=message_id)
    return event("message_start", {"type": "message_start", "message": start})


def ping() -> str:
    return event("ping", {"type": "ping"})


def text_block_events(index: int, pieces: Iterable[str]) -> list[str]:
    out = [
        event("content_block_start", {"type": "content_block_start", "index": index, "content_block": text_block("")})
    ]
    for piece in pieces:
        delta = {"type": "text_delta", "text": piece}
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
    out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def tool_use_events(index: int, call_id: str, name: str, json_pieces: Iterable[str]) -> list[str]:
    start = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    out = [event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    for piece in json_pieces:
        delta = {"type": "input_json_delta", "partial_json": piece}
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
    out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def thinking_block_events(index: int, thought: str) -> list[str]:
    start = {"type": "thinking", "thinking": ""}
    deltas = [{"type": "thinking_delta", "thinking": thought}, {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}]
    out = [event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    out += [event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def message_delta(stop_reason: str = "end_turn", output_tokens: int = 15) -> str:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return event("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}})


def message_stop() -> str:
    return event("message_stop", {"type": "message_stop"})


def error_event(error_type: str = "overloaded_error", text: str = "Overloaded") -> str:
    return event("error", error_body(error_type, text))


def text_stream(pieces: Iterable[str], *, stop_reason: str = "end_turn", output_tokens: int = 15) -> list[str]:
    """A whole, well-formed text reply: start, one ping, one text block, delta, stop."""
    return [
        message_start(),
        ping(),
        *text_block_events(0, pieces),
        message_delta(stop_reason, output_tokens),
        message_stop(),
    ]


# --------------------------------------------------------------------------- byte splitting


def split_every(events: Iterable[str], size: int) -> list[bytes]:
    """The stream's bytes cut into ``size``-byte pieces: inside lines, JSON and UTF-8 sequences."""
    raw = "".join(events).encode()
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def paced(pieces: Iterable[bytes], gap: float = 0.002) -> list[bytes | Pause]:
    """Pieces with a short pause between them, so each one arrives in its own TCP read."""
    out: list[bytes | Pause] = []
    for piece in pieces:
        if out:
            out.append(Pause(gap))
        out.append(piece)
    return out
