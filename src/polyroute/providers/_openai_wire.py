"""The OpenAI Chat Completions wire format as pure data mapping, with no I/O.

:mod:`polyroute.providers.openai` owns configuration and HTTP; this module turns our types
into OpenAI JSON and OpenAI JSON (whole replies, stream chunks, embedding lists) back into
ours. Anything the server sent that cannot be read raises :class:`Unreadable`, which the
provider turns into the typed error that fits where it happened (a malformed stream or an
unusable reply).
"""

from __future__ import annotations

import array
import base64
from typing import Any, Literal

import orjson

from polyroute import errors
from polyroute.providers._http import error_from_payload
from polyroute.providers._sse import SSEEvent
from polyroute.types import (
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    ContentPart,
    FinishReason,
    Message,
    NamedToolChoice,
    TextPart,
    Tool,
    ToolCall,
    Usage,
)

__all__ = [
    "MaxTokensParam",
    "StreamState",
    "Unreadable",
    "chat_body",
    "chat_response",
    "usage_from",
    "vectors",
    "wire_message",
    "wire_tool",
]

MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}
_FILTERED = "the provider's content filter withheld the reply"
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Unreadable(ValueError):
    """The server's output cannot be turned into ours; callers raise the fitting typed error."""


# --------------------------------------------------------------------------- request mapping


def _content(content: str | list[ContentPart] | None) -> Any:
    if content is None or isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
            continue
        url = part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"
        image: dict[str, Any] = {"url": url}
        if part.detail:
            image["detail"] = part.detail
        parts.append({"type": "image_url", "image_url": image})
    return parts


def wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        # Tool results are text; a tool message has no ``name`` in this format.
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    out: dict[str, Any] = {"role": message.role, "content": _content(message.content)}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                # the raw string when we have it, so a call is echoed back byte for byte
                "function": {"name": call.name, "arguments": call.raw_arguments or _dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    elif out["content"] is None:
        out["content"] = ""
    if message.name:
        out["name"] = message.name
    return out


def wire_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def chat_body(
    model: str,
    request: ChatRequest,
    *,
    max_tokens_param: MaxTokensParam = "max_tokens",
    stream: bool = False,
    stream_usage: bool = True,
) -> dict[str, Any]:
    """The JSON body for ``/chat/completions`` (``metadata`` is ours and is not sent)."""
    body: dict[str, Any] = {"model": model, "messages": [wire_message(m) for m in request.messages]}
    if request.tools:
        body["tools"] = [wire_tool(t) for t in request.tools]
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        body["tool_choice"] = choice
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        body[max_tokens_param] = request.max_tokens
    if request.stop:
        body["stop"] = request.stop
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema = {"name": fmt.name, "schema": fmt.json_schema, "strict": fmt.strict}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


# --------------------------------------------------------------------------- response mapping


def _assistant(content: str | None, tool_calls: list[ToolCall]) -> Message:
    return Message.model_construct(
        role="assistant", content=content, tool_calls=tool_calls or None, name=None, tool_call_id=None
    )


def _tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    if not name:
        raise Unreadable(f"tool call {call_id!r} has no function name")
    try:
        arguments = _loads(raw) if raw.strip() else {}
    except _JSONDecodeError:
        raise Unreadable(f"the arguments of tool call {name!r} are not valid JSON") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise Unreadable(f"the arguments of tool call {name!r} are not a JSON object")
    return ToolCall.model_construct(id=call_id, name=name, arguments=arguments, raw_arguments=raw)


def _tool_calls(raw_calls: Any) -> list[ToolCall]:
    calls: list[ToolCall] = []
    try:
        for raw in raw_calls or ():
            function = raw.get("function") or {}
            arguments = function.get("arguments")
            if not isinstance(arguments, str):  # a few servers send the object itself
                arguments = _dumps(arguments or {})
            call_id = str(raw.get("id") or f"call_{len(calls)}")
            calls.append(_tool_call(call_id, str(function.get("name") or ""), arguments))
    except (AttributeError, TypeError):
        raise Unreadable("a tool call is not an object") from None
    return calls


def _count(value: Any) -> int:
    return value if type(value) is int else int(value) if isinstance(value, float) else 0


def usage_from(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = _count(raw.get("prompt_tokens"))
    completion = _count(raw.get("completion_tokens"))
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    return Usage.model_construct(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_count(raw.get("total_tokens")) or prompt + completion,
        cached_tokens=_count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        reasoning_tokens=(
            _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        ),
    )


def _finish(raw: Any, has_tool_calls: bool) -> FinishReason:
    reason = _FINISH.get(raw, "stop") if isinstance(raw, str) else "stop"
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


def _text(content: Any) -> str | None:
    """Message content as text: a string, or the text parts some servers return as a list."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict)) or None
    return str(content)


def chat_response(data: Any, provider: str, model: str) -> ChatResponse:
    if not isinstance(data, dict):
        raise Unreadable("the body is not a JSON object")
    if "error" in data or data.get("object") == "error":
        raise error_from_payload(provider, model, data)
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise Unreadable("it has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise Unreadable("the choice has no message")
    content = _text(message.get("content")) or _text(message.get("refusal"))
    tool_calls = _tool_calls(message.get("tool_calls"))
    finish = _finish(choices[0].get("finish_reason"), bool(tool_calls))
    if finish == "content_filter" and not content and not tool_calls:
        raise errors.ContentFilteredError(_FILTERED, provider=provider, model=model)
    return ChatResponse.model_construct(
        id=str(data.get("id") or ""),
        message=_assistant(content, tool_calls),
        finish_reason=finish,
        usage=usage_from(data.get("usage")),
        provider=provider,
        model=model,
        latency=0.0,
        attempts=[],
    )


def vectors(data: Any, expected: int) -> list[list[float]]:
    """Vectors in input order: servers may answer out of order, ``index`` says which is which."""
    try:
        items = data["data"]
        if all("index" in item for item in items):
            items = sorted(items, key=lambda item: item["index"])
        indices = [item.get("index", n) for n, item in enumerate(items)]
        found = [item["embedding"] for item in items]
        for n, vector in enumerate(found):
            if isinstance(vector, str):  # base64 float32, from servers that ignore ``encoding_format``
                found[n] = array.array("f", base64.b64decode(vector)).tolist()
            elif not isinstance(vector, list):
                raise TypeError
    except (KeyError, TypeError, ValueError, AttributeError):
        raise Unreadable("it does not have the embeddings shape") from None
    if indices != list(range(expected)):
        raise Unreadable(f"asked for {expected} embeddings, got indices {indices[:8]}")
    return found


# --------------------------------------------------------------------------- streaming


class _ToolCallBuffer:
    """Streamed tool calls, assembled by ``index`` from their argument pieces."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, argument pieces]

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, deltas: Any) -> None:
        calls = self._calls
        for delta in deltas:
            index, call_id = delta.get("index"), delta.get("id")
            if type(index) is not int:  # servers that omit ``index``: match by id, else the last call
                same = [i for i, slot in calls.items() if call_id and slot[0] == call_id]
                index = same[0] if same else len(calls) if call_id or not calls else max(calls)
            slot = calls.get(index)
            if slot is None:
                slot = calls[index] = [call_id or "", "", []]
            elif call_id:
                slot[0] = call_id
            function = delta.get("function")
            if function:
                if function.get("name"):
                    slot[1] = function["name"]
                if function.get("arguments"):
                    slot[2].append(function["arguments"])

    def drain(self) -> list[ToolCall]:
        try:
            calls = [
                _tool_call(call_id or f"call_{index}", name, "".join(pieces))
                for index, (call_id, name, pieces) in sorted(self._calls.items())
            ]
        except TypeError:
            raise Unreadable("tool-call arguments are not text") from None
        self._calls.clear()
        return calls


class StreamState:
    """One stream's parser (an :class:`~polyroute.providers._http.StreamParser`).

    :meth:`feed` takes one SSE event; the hot path is one ``orjson.loads``, a few dict
    lookups and one token event. Tool calls are buffered and released whole with the chunk
    that carries the ``finish_reason``; ``data: [DONE]`` yields the closing ``usage`` and
    ``end`` events and sets :attr:`done`.
    """

    __slots__ = ("done", "emitted", "finish", "model", "pending", "provider", "response_id", "text", "usage")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.done = False
        self.text: list[str] = []
        self.emitted: list[ToolCall] = []
        self.pending = _ToolCallBuffer()
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None
        self.response_id = ""

    def feed(self, event: SSEEvent) -> list[ChatStreamEvent]:
        data = event.data
        if data == "[DONE]":
            self.done = True
            return self._closing()
        try:
            chunk = _loads(data)
        except _JSONDecodeError:
            raise Unreadable("a chunk is not valid JSON") from None
        if type(chunk) is not dict:
            raise Unreadable("a chunk is not a JSON object")
        if "error" in chunk or chunk.get("object") == "error":
            raise error_from_payload(self.provider, self.model, chunk, streaming=True)
        out: list[ChatStreamEvent] = []
        try:
            choices = chunk.get("choices")
            if choices:
                choice = choices[0]
                delta = choice.get("delta")
                if delta:
                    content = delta.get("content") or delta.get("refusal")
                    if content:
                        if type(content) is not str:
                            raise Unreadable("a delta's content is not text")
                        self.text.append(content)
                        out.append(ChatStreamEvent("token", delta=content, provider=self.provider, model=self.model))
                    if delta.get("tool_calls"):
                        self.pending.add(delta["tool_calls"])
                if choice.get("finish_reason"):
                    out.extend(self._release_tool_calls())
                    self.finish = _finish(choice["finish_reason"], bool(self.emitted))
        except (AttributeError, TypeError, KeyError, IndexError):
            raise Unreadable("a chunk does not have the chat.completion.chunk shape") from None
        if chunk.get("usage"):
            self.usage = usage_from(chunk["usage"])
        if not self.response_id:
            self.response_id = str(chunk.get("id") or "")
        return out

    def _release_tool_calls(self) -> list[ChatStreamEvent]:
        if not self.pending:
            return []
        calls = self.pending.drain()
        self.emitted.extend(calls)
        return [ChatStreamEvent("tool_call", tool_call=c, provider=self.provider, model=self.model) for c in calls]

    def _closing(self) -> list[ChatStreamEvent]:
        events = self._release_tool_calls()  # from servers that never sent a finish_reason
        reason = self.finish or ("tool_calls" if self.emitted else "stop")
        if reason == "content_filter" and not self.text and not self.emitted:
            raise errors.ContentFilteredError(_FILTERED, provider=self.provider, model=self.model)
        if self.usage is not None:
            events.append(ChatStreamEvent("usage", usage=self.usage, provider=self.provider, model=self.model))
        reply = ChatResponse.model_construct(
            id=self.response_id,
            message=_assistant("".join(self.text) or None, self.emitted),
            finish_reason=reason,
            usage=self.usage or Usage(),
            provider=self.provider,
            model=self.model,
            latency=0.0,
            attempts=[],
        )
        events.append(
            ChatStreamEvent(
                "end", finish_reason=reason, usage=self.usage, response=reply, provider=self.provider, model=self.model
            )
        )
        return events
