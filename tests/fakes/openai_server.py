"""OpenAI Chat Completions and Embeddings replies for :class:`fakes.upstream.FakeUpstream`.

Builders return the JSON shapes OpenAI documents (``chat.completion``,
``chat.completion.chunk``, the ``list`` of ``embedding`` objects, and ``{"error": {"message",
"type", "param", "code"}}`` error bodies) and the SSE framing of ``stream: true``: one
``data: <json>`` event per chunk, a blank line after each, a final usage-only chunk (``choices:
[]``) when ``stream_options.include_usage`` is set, and ``data: [DONE]``.

:class:`OpenAIFake` is a ready handler for tests and benchmarks: it routes
``POST {prefix}/chat/completions`` and ``{prefix}/embeddings``, checks the Bearer key like the
real service, streams or not as the request asks, and answers from a script or by default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from fakes.upstream import Pause, Recorded, Reply

__all__ = [
    "DONE",
    "OpenAIFake",
    "chunk",
    "completion",
    "completion_reply",
    "embeddings",
    "error_body",
    "error_reply",
    "every_byte",
    "invalid_api_key",
    "rate_limited",
    "sse",
    "stream_events",
    "stream_reply",
    "tool_call",
    "tool_call_chunks",
    "usage",
    "usage_chunk",
]

DONE = "data: [DONE]\n\n"
MODEL = "gpt-4o-mini"
COMPLETION_ID = "chatcmpl-fake0001"
CREATED = 1_730_000_000


# --------------------------------------------------------------------------- whole replies


def usage(
    prompt: int = 12,
    completion: int = 7,
    *,
    total: int | None = None,
    cached: int | None = None,
    reasoning: int | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if total is not None else prompt + completion,
    }
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
    if reasoning is not None:
        out["completion_tokens_details"] = {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return out


def tool_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    """One entry of ``message.tool_calls``; ``arguments`` is sent as a JSON string, as OpenAI does."""
    raw = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}


def completion(
    content: str | None = "Hello from the fake.",
    *,
    tool_calls: Sequence[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    usage_counts: dict[str, Any] | None = None,
    model: str = MODEL,
    id: str = COMPLETION_ID,  # noqa: A002
    refusal: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    return {
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
        "usage": usage_counts if usage_counts is not None else usage(),
        "system_fingerprint": "fp_fake",
    }


def completion_reply(content: str | None = "Hello from the fake.", **kw: Any) -> Reply:
    return Reply.json(completion(content, **kw))


def embeddings(
    vectors: Sequence[Sequence[float]], *, model: str = "text-embedding-3-small", order: Sequence[int] | None = None
) -> dict[str, Any]:
    """An embeddings list; ``order`` lists input indices in the order the items are sent."""
    indices = list(order) if order is not None else list(range(len(vectors)))
    data = [{"object": "embedding", "index": i, "embedding": list(vectors[i])} for i in indices]
    tokens = 4 * len(vectors)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# --------------------------------------------------------------------------- errors


def error_body(
    message: str, error_type: str = "invalid_request_error", *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_reply(
    status: int,
    message: str,
    error_type: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    return Reply.json(error_body(message, error_type, param=param, code=code), status=status, headers=headers)


def invalid_api_key(shown_key: str = "sk-fake********************1234") -> Reply:
    return error_reply(
        401,
        f"Incorrect API key provided: {shown_key}. You can find your API key at https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def rate_limited(headers: dict[str, str] | None = None) -> Reply:
    return error_reply(
        429,
        "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 20s.",
        "requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


# --------------------------------------------------------------------------- streaming


def sse(data: dict[str, Any] | str, *, eol: str = "\n") -> str:
    """One SSE event carrying ``data`` (a chunk object, or raw text such as ``[DONE]``)."""
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    return f"data: {text}{eol}{eol}"


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    model: str = MODEL,
    id: str = COMPLETION_ID,  # noqa: A002
    with_usage_field: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:  # with include_usage every chunk carries "usage": null
        out["usage"] = None
    return out


def usage_chunk(counts: dict[str, Any] | None = None, *, model: str = MODEL) -> dict[str, Any]:
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [],
        "usage": counts if counts is not None else usage(),
    }


def tool_call_chunks(index: int, call_id: str, name: str, pieces: Iterable[str]) -> list[dict[str, Any]]:
    """One streamed tool call: id, name and empty arguments first, then argument pieces."""
    first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    out = [chunk({"tool_calls": [first]})]
    out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}) for piece in pieces]
    return out


def stream_events(
    tokens: Iterable[str] = ("Hello", " from", " the", " fake."),
    *,
    tool_calls: Iterable[dict[str, Any]] = (),
    finish_reason: str | None = None,
    usage_counts: dict[str, Any] | None = None,
    include_usage: bool = True,
    done: bool = True,
    eol: str = "\n",
) -> list[str]:
    """A whole stream as SSE events, in OpenAI's order.

    Role chunk, one chunk per token, the ``tool_calls`` chunks as given, the finish chunk
    (empty delta), the usage chunk when ``include_usage``, then ``[DONE]`` when ``done``.
    """
    tool_chunks = list(tool_calls)
    events = [sse(chunk({"role": "assistant", "content": "", "refusal": None}), eol=eol)]
    events += [sse(chunk({"content": token}), eol=eol) for token in tokens]
    events += [sse(c, eol=eol) for c in tool_chunks]
    reason = finish_reason or ("tool_calls" if tool_chunks else "stop")
    events.append(sse(chunk({}, finish_reason=reason, with_usage_field=include_usage), eol=eol))
    if include_usage:
        events.append(sse(usage_chunk(usage_counts), eol=eol))
    if done:
        events.append(sse("[DONE]", eol=eol))
    return events


def every_byte(events: Iterable[str], gap: float | None = 0.0) -> list[bytes | Pause]:
    """The stream's bytes written one at a time (with an optional pause so reads stay apart)."""
    data = "".join(events).encode()
    pieces: list[bytes | Pause] = []
    for i in range(len(data)):
        pieces.append(data[i : i + 1])
        if gap is not None:
            pieces.append(Pause(gap))
    return pieces


def stream_reply(events: Iterable[str | bytes | Pause], *, disconnect: bool = False) -> Reply:
    return Reply.sse(events, disconnect=disconnect)


# --------------------------------------------------------------------------- a ready handler

Script = Callable[[Recorded], Reply]


def _vector(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % len(digest)] - 128) / 128, 6) for i in range(dimensions)]


class OpenAIFake:
    """A handler that answers like the OpenAI API.

    Without a script, chat answers with ``text`` (streamed as ``tokens`` when the request
    says ``stream: true``) and embeddings with deterministic vectors. ``script`` replies (or
    callables making one from the request) are used first, in order. A request whose Bearer
    key is not ``api_key`` gets OpenAI's 401 (pass ``api_key=None`` to accept any).
    """

    def __init__(
        self,
        api_key: str | None = "sk-test",
        *,
        prefix: str = "/v1",
        tokens: Sequence[str] = ("Hello", " from", " the", " fake."),
        dimensions: int = 8,
        script: Iterable[Reply | Script] = (),
    ) -> None:
        self.api_key = api_key
        self.prefix = prefix.rstrip("/")
        self.tokens = list(tokens)
        self.dimensions = dimensions
        self.script: list[Reply | Script] = list(script)

    def __call__(self, request: Recorded) -> Reply:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return invalid_api_key()
        if self.script:
            step = self.script.pop(0)
            return step if isinstance(step, Reply) else step(request)
        if request.method != "POST":
            return error_reply(405, f"Invalid method for URL ({request.method} {request.path})")
        if request.path == f"{self.prefix}/chat/completions":
            return self.chat(request.json())
        if request.path == f"{self.prefix}/embeddings":
            return self.embed(request.json())
        return error_reply(404, f"Invalid URL (POST {request.path})")

    def chat(self, body: dict[str, Any]) -> Reply:
        model = body.get("model", MODEL)
        counts = usage(12, len(self.tokens))
        if not body.get("stream"):
            return completion_reply("".join(self.tokens), model=model, usage_counts=counts)
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        return stream_reply(stream_events(self.tokens, usage_counts=counts, include_usage=include))

    def embed(self, body: dict[str, Any]) -> Reply:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        size = body.get("dimensions") or self.dimensions
        return Reply.json(embeddings([_vector(text, size) for text in inputs], model=body.get("model", "")))
