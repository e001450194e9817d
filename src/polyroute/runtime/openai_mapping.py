"""OpenAI Chat Completions / Embeddings wire format <-> polyroute types, for the ``/v1`` surface.

Requests are read leniently (unknown fields such as ``user`` or ``seed`` are ignored, as an
OpenAI-compatible server must), but what is read is checked, and problems are 422s naming
the field (``messages.2.tool_calls.0.function.arguments``). Responses and stream chunks
follow OpenAI's shapes field for field so that the official SDKs parse them unchanged.

Stream chunks are assembled from pre-encoded byte templates: per token only the delta is
JSON-encoded, the envelope (id, model, created...) is encoded once per stream.
"""

from __future__ import annotations

import array
import base64
import sys
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polyroute.runtime.body import field_errors, invalid, invalid_field
from polyroute.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)
from polyroute.types import NamedToolChoice as _NamedToolChoice

__all__ = [
    "ChatCompletionBody",
    "ChunkWriter",
    "EmbeddingBody",
    "completion_json",
    "embedding_json",
    "to_chat_request",
    "usage_json",
]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionBody(_Lenient):
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="only 1 is supported")
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    #: polyroute extension: models to try, in order, if ``model`` fails
    fallbacks: list[str] | None = None


class EmbeddingBody(_Lenient):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    dimensions: int | None = Field(default=None, gt=0)
    encoding_format: Literal["float", "base64"] = "float"
    fallbacks: list[str] | None = None


# --------------------------------------------------------------------------- requests


def _image(part: dict[str, Any], path: tuple[str | int, ...]) -> ImagePart:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise invalid_field((*path, "image_url", "url"), "an image_url part needs a 'url'")
    detail = image.get("detail") if isinstance(image, dict) else None
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return ImagePart(data=data, media_type=media_type or "application/octet-stream", detail=detail)
    return ImagePart(url=url, detail=detail)


def _content(value: Any, path: tuple[str | int, ...], *, images: bool) -> str | list[ContentPart] | None:
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid_field(path, "content must be a string or an array of content parts", "type_error")
    parts: list[ContentPart] = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(TextPart(text=part["text"]))
        elif kind == "image_url" and images:
            parts.append(_image(part, (*path, i)))
        else:
            raise invalid_field((*path, i, "type"), f"unsupported content part type {kind!r}", "value_error")
    return parts


def _text_only(content: str | list[ContentPart] | None) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "".join(p.text for p in content if isinstance(p, TextPart))


def _tool_calls(value: Any, path: tuple[str | int, ...]) -> list[ToolCall] | None:
    if not value:
        return None
    if not isinstance(value, list):
        raise invalid_field(path, "tool_calls must be an array", "type_error")
    calls = []
    for i, call in enumerate(value):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
            raise invalid_field((*path, i), "a tool call needs 'id' and 'function': {'name', 'arguments'}")
        raw = fn.get("arguments") or ""
        try:
            args = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise invalid_field((*path, i, "function", "arguments"), "arguments must be a JSON object string") from None
        if not isinstance(args, dict):
            raise invalid_field((*path, i, "function", "arguments"), "arguments must be a JSON object string")
        calls.append(ToolCall(id=call["id"], name=fn["name"], arguments=args, raw_arguments=raw))
    return calls


def _message(i: int, m: Any) -> Message:
    path: tuple[str | int, ...] = ("messages", i)
    if not isinstance(m, dict):
        raise invalid_field(path, "each message must be an object", "type_error")
    role = m.get("role")
    try:
        if role in ("system", "developer"):
            return Message(
                role="system", content=_text_only(_content(m.get("content"), (*path, "content"), images=False))
            )
        if role == "user":
            return Message(
                role="user", content=_content(m.get("content"), (*path, "content"), images=True), name=m.get("name")
            )
        if role == "assistant":
            return Message(
                role="assistant",
                content=_text_only(_content(m.get("content"), (*path, "content"), images=False)),
                tool_calls=_tool_calls(m.get("tool_calls"), (*path, "tool_calls")),
                name=m.get("name"),
            )
        if role == "tool":
            return Message(
                role="tool",
                content=_text_only(_content(m.get("content"), (*path, "content"), images=False)) or "",
                tool_call_id=m.get("tool_call_id"),
            )
    except ValidationError as exc:
        raise invalid(field_errors(exc, path)) from None
    raise invalid_field((*path, "role"), f"unsupported role {role!r} (system, developer, user, assistant or tool)")


def _tools(value: list[dict[str, Any]] | None) -> list[Tool] | None:
    if not value:
        return None
    tools = []
    for i, tool in enumerate(value):
        fn = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise invalid_field(("tools", i), "only {'type': 'function', 'function': {...}} tools are supported")
        try:
            tools.append(
                Tool(
                    name=fn.get("name"),
                    description=fn.get("description"),
                    parameters=fn.get("parameters") or {"type": "object", "properties": {}},
                )
            )
        except ValidationError as exc:
            raise invalid(field_errors(exc, ("tools", i, "function"))) from None
    return tools


def _tool_choice(value: str | dict[str, Any] | None) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return value  # type: ignore[return-value]
    if (
        isinstance(value, dict)
        and isinstance(value.get("function"), dict)
        and isinstance(value["function"].get("name"), str)
    ):
        return _NamedToolChoice(name=value["function"]["name"])
    raise invalid_field(("tool_choice",), "tool_choice must be 'auto', 'none', 'required' or a named function")


def _response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type")
    try:
        if kind == "json_schema":
            spec = value.get("json_schema") or {}
            return ResponseFormat(
                type="json_schema",
                json_schema=spec.get("schema"),
                name=spec.get("name") or "response",
                strict=bool(spec.get("strict", True)),
            )
        return ResponseFormat(type=kind)
    except ValidationError as exc:
        raise invalid(field_errors(exc, ("response_format",))) from None


def to_chat_request(body: ChatCompletionBody) -> ChatRequest:
    messages = [_message(i, m) for i, m in enumerate(body.messages)]
    try:
        return ChatRequest(
            model=body.model,
            fallbacks=body.fallbacks or [],
            messages=messages,
            tools=_tools(body.tools),
            tool_choice=_tool_choice(body.tool_choice),
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            stop=body.stop,
            response_format=_response_format(body.response_format),
        )
    except ValidationError as exc:
        raise invalid(field_errors(exc)) from None


# --------------------------------------------------------------------------- responses

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",
}


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.raw_arguments or orjson.dumps(call.arguments).decode()},
    }
    return data if index is None else {"index": index, **data}


def completion_json(response: ChatResponse, completion_id: str, created: int) -> dict[str, Any]:
    calls = response.message.tool_calls
    message: dict[str, Any] = {
        "role": "assistant",
        "content": response.message.text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [_call_json(c) for c in calls]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": f"{response.provider}:{response.model}",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH[response.finish_reason]}
        ],
        "usage": usage_json(response.usage),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """Encodes ``chat.completion.chunk`` events for one stream as SSE ``data:`` lines."""

    __slots__ = ("_head", "_tail", "include_usage", "tool_index")

    def __init__(self, completion_id: str, created: int, model: str, *, include_usage: bool) -> None:
        envelope = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }
        self._head = b"data: " + orjson.dumps(envelope)[:-1] + b',"choices":['
        self._tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self.include_usage = include_usage
        self.tool_index = 0

    def _choice(self, delta: bytes, finish: str | None) -> bytes:
        reason = b"null" if finish is None else orjson.dumps(finish)
        return (
            self._head
            + b'{"index":0,"delta":'
            + delta
            + b',"logprobs":null,"finish_reason":'
            + reason
            + b"}"
            + self._tail
        )

    def role(self) -> bytes:
        return self._choice(b'{"role":"assistant","content":""}', None)

    def token(self, text: str) -> bytes:
        return self._choice(b'{"content":' + orjson.dumps(text) + b"}", None)

    def tool_call(self, call: ToolCall) -> bytes:
        delta = orjson.dumps({"tool_calls": [_call_json(call, self.tool_index)]})
        self.tool_index += 1
        return self._choice(delta, None)

    def finish(self, reason: str) -> bytes:
        return self._choice(b"{}", _FINISH.get(reason, "stop"))

    def usage(self, usage: Usage) -> bytes:
        return self._head + b'],"usage":' + orjson.dumps(usage_json(usage)) + b"}\n\n"

    @staticmethod
    def error(body: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(body) + b"\n\n"

    DONE = b"data: [DONE]\n\n"


def _base64(vector: list[float]) -> str:
    packed = array.array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def embedding_json(vectors: list[list[float]], usage: Usage, model: str, encoding: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _base64(v) if encoding == "base64" else v}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens or usage.prompt_tokens},
    }
