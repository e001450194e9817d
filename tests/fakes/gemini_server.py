"""Gemini (Generative Language API) replies for :class:`fakes.upstream.FakeUpstream`.

Builders return the exact JSON shapes Google documents (``GenerateContentResponse``,
``BatchEmbedContentsResponse``, ``google.rpc.Status`` error bodies) and the SSE framing of
``streamGenerateContent?alt=sse`` (``data: <json>`` events separated by ``\\r\\n\\r\\n``, no
``[DONE]``). :class:`GeminiFake` is a ready handler that routes by method, checks the
``x-goog-api-key`` header like the real service, and answers with scripted or default replies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from fakes.upstream import Pause, Recorded, Reply

__all__ = [
    "GeminiFake",
    "api_key_invalid",
    "blocked_prompt",
    "chunk",
    "embeddings",
    "error_body",
    "error_info",
    "error_reply",
    "function_call",
    "rate_limited",
    "response",
    "retry_info",
    "split",
    "sse_body",
    "sse_reply",
    "text",
    "usage",
]

SSE_SEPARATOR = "\r\n\r\n"

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# --------------------------------------------------------------------------- parts & responses


def text(value: str, *, thought: bool = False) -> dict[str, Any]:
    part: dict[str, Any] = {"text": value}
    if thought:
        part["thought"] = True
    return part


def function_call(name: str, args: dict[str, Any] | None = None, *, id: str | None = None) -> dict[str, Any]:  # noqa: A002
    call: dict[str, Any] = {"name": name, "args": args if args is not None else {}}
    if id is not None:
        call["id"] = id
    return {"functionCall": call}


def usage(
    prompt: int = 0,
    candidates: int = 0,
    *,
    total: int | None = None,
    cached: int | None = None,
    thoughts: int | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    meta["totalTokenCount"] = total if total is not None else prompt + candidates + (thoughts or 0)
    if cached is not None:
        meta["cachedContentTokenCount"] = cached
    if thoughts is not None:
        meta["thoughtsTokenCount"] = thoughts
    return meta


def response(
    parts: Sequence[dict[str, Any] | str] = (),
    *,
    finish: str | None = "STOP",
    usage_metadata: dict[str, Any] | None = None,
    response_id: str = "resp-1",
    model_version: str = "gemini-2.0-flash",
) -> dict[str, Any]:
    """A whole ``GenerateContentResponse`` with one candidate (strings become text parts)."""
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [text(p) if isinstance(p, str) else p for p in parts]},
        "index": 0,
    }
    if finish is not None:
        candidate["finishReason"] = finish
    data: dict[str, Any] = {"candidates": [candidate], "modelVersion": model_version, "responseId": response_id}
    if usage_metadata is not None:
        data["usageMetadata"] = usage_metadata
    return data


def chunk(
    parts: Sequence[dict[str, Any] | str] = (),
    *,
    finish: str | None = None,
    usage_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One stream chunk: a ``GenerateContentResponse`` that usually has no finishReason yet."""
    return response(parts, finish=finish, usage_metadata=usage_metadata)


def blocked_prompt(reason: str = "SAFETY", *, prompt_tokens: int = 5) -> dict[str, Any]:
    """The answer when the prompt itself is blocked: no candidates, only promptFeedback."""
    return {
        "promptFeedback": {
            "blockReason": reason,
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}],
        },
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
        "modelVersion": "gemini-2.0-flash",
    }


def embeddings(vectors: Iterable[Sequence[float]]) -> dict[str, Any]:
    return {"embeddings": [{"values": list(v)} for v in vectors]}


# --------------------------------------------------------------------------- errors


def error_info(reason: str, *, domain: str = "googleapis.com") -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": domain,
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def error_body(
    code: int, message: str, *, status: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status or _STATUS_NAMES.get(code, "UNKNOWN")}
    if details is not None:
        err["details"] = details
    return {"error": err}


def error_reply(
    code: int,
    message: str = "error",
    *,
    status: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    return Reply.json(error_body(code, message, status=status, details=details), status=code, headers=headers)


def api_key_invalid() -> Reply:
    """What Google answers for a wrong key: HTTP 400 INVALID_ARGUMENT, not 401."""
    message = "API key not valid. Please pass a valid API key."
    details = [
        error_info("API_KEY_INVALID"),
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
    ]
    return error_reply(400, message, details=details)


def rate_limited(delay: str = "12s", *, headers: dict[str, str] | None = None) -> Reply:
    """HTTP 429 RESOURCE_EXHAUSTED with the wait in a RetryInfo detail (no Retry-After header)."""
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}],
        },
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more", "url": "https://ai.google.dev"}]},
        retry_info(delay),
    ]
    return error_reply(429, "You exceeded your current quota.", details=details, headers=headers)


# --------------------------------------------------------------------------- streams


def sse_body(chunks: Iterable[dict[str, Any] | bytes], *, separator: str = SSE_SEPARATOR) -> bytes:
    """The whole ``alt=sse`` body: one ``data:`` event per chunk (bytes are sent verbatim)."""
    sep = separator.encode()
    return b"".join(c if isinstance(c, bytes) else b"data: " + orjson.dumps(c) + sep for c in chunks)


def split(data: bytes, sizes: int | Sequence[int]) -> list[bytes]:
    """Cut ``data`` into pieces (every ``sizes`` bytes, or at the given piece lengths, rest last)."""
    if isinstance(sizes, int):
        return [data[i : i + sizes] for i in range(0, len(data), sizes)]
    pieces, at = [], 0
    for size in sizes:
        pieces.append(data[at : at + size])
        at += size
    if at < len(data):
        pieces.append(data[at:])
    return [p for p in pieces if p]


def sse_reply(
    chunks: Iterable[dict[str, Any] | bytes],
    *,
    pieces: int | Sequence[int] | None = None,
    separator: str = SSE_SEPARATOR,
    disconnect: bool = False,
    pause: float | None = None,
) -> Reply:
    """A streaming reply; ``pieces`` re-cuts the body so events straddle TCP writes."""
    body = sse_body(chunks, separator=separator)
    parts: list[bytes | Pause] = list(split(body, pieces)) if pieces is not None else [body]
    if pause is not None:
        parts = [x for p in parts for x in (p, Pause(pause))]
    return Reply.sse(parts, disconnect=disconnect)


# --------------------------------------------------------------------------- handler

Scripted = Reply | dict[str, Any] | Callable[[Recorded], Reply | dict[str, Any]]


class GeminiFake:
    """A FakeUpstream handler that behaves like ``generativelanguage.googleapis.com``.

    Routes ``POST /<version>/models/<model>:<method>``; a wrong ``x-goog-api-key`` gets the real
    400 ``API_KEY_INVALID``; an unknown path gets a Google-style 404. ``generate`` / ``stream`` /
    ``embed`` script the replies (a Reply, a JSON dict, or a function of the request); by
    default ``generateContent`` echoes the last user text, streaming sends it word by word, and
    embeddings are ``[len(text), position]`` so order is checkable.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        version: str = "v1beta",
        generate: Scripted | None = None,
        stream: Scripted | None = None,
        embed: Scripted | None = None,
    ) -> None:
        self.api_key = api_key
        self.version = version
        self.scripts: dict[str, Scripted | None] = {
            "generateContent": generate,
            "streamGenerateContent": stream,
            "batchEmbedContents": embed,
        }

    def __call__(self, request: Recorded) -> Reply:
        if request.headers.get("x-goog-api-key") != self.api_key:
            return api_key_invalid()
        prefix = f"/{self.version}/models/"
        resource, colon, method = request.path.removeprefix(prefix).partition(":")
        if not request.path.startswith(prefix) or not colon or method not in self.scripts or request.method != "POST":
            return error_reply(404, f"models/{resource} is not found for API version {self.version}")
        script = self.scripts[method]
        if script is None:
            reply: Reply | dict[str, Any] = getattr(self, f"_default_{method}")(request)
        elif callable(script):
            reply = script(request)
        else:
            reply = script
        return reply if isinstance(reply, Reply) else Reply.json(reply)

    @staticmethod
    def _last_user_text(request: Recorded) -> str:
        contents = request.json().get("contents") or []
        users = [c for c in contents if c.get("role") == "user"]
        parts = users[-1]["parts"] if users else []
        return "".join(p.get("text", "") for p in parts)

    def _default_generateContent(self, request: Recorded) -> dict[str, Any]:  # noqa: N802
        said = self._last_user_text(request)
        return response([said], usage_metadata=usage(len(said.split()), len(said.split())))

    def _default_streamGenerateContent(self, request: Recorded) -> Reply:  # noqa: N802
        words = self._last_user_text(request).split(" ")
        pieces = [chunk([w if i == 0 else " " + w]) for i, w in enumerate(words)]
        pieces.append(chunk(finish="STOP", usage_metadata=usage(len(words), len(words))))
        if "alt=sse" not in request.query.split("&"):  # without alt=sse Gemini sends one JSON array
            return Reply.json(pieces)
        return sse_reply(pieces)

    def _default_batchEmbedContents(self, request: Recorded) -> dict[str, Any]:  # noqa: N802
        items = request.json()["requests"]
        return embeddings([float(len(r["content"]["parts"][0]["text"])), float(i)] for i, r in enumerate(items))
