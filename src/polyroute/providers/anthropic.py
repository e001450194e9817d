"""The Anthropic Messages API wire format (``POST /v1/messages``), plain and streamed.

As the official SDK does, the base URL is the host root (``https://api.anthropic.com``) and the
client adds ``/v1/messages``; a base that already ends in ``/v1`` is accepted too. The key goes
in ``x-api-key`` (not a Bearer token) next to the required ``anthropic-version`` header.

Choices made where the two formats differ:

- System messages become the top-level ``system`` string (joined by blank lines, wherever they
  stood): the Messages API has no system role.
- The API wants user and assistant turns to alternate, so consecutive messages of one role are
  merged into one message with several content blocks. Our ``tool`` messages become
  ``tool_result`` blocks in a *user* message; the results of parallel calls therefore share one
  user message, and they are placed before any text in it, as the API requires.
- ``max_tokens`` is required by the API: the request's value or ``default_max_tokens`` is sent.
  ``temperature`` is clamped to Anthropic's 0..1 (ours is OpenAI's 0..2).
- Structured output has no request field here, so it is done with a *forced tool*: a synthetic
  tool named after the response format (``ResponseFormat.name``), whose ``input_schema`` is the
  JSON schema (``json_object`` uses a permissive object schema), and a ``tool_choice`` that makes
  the model call it. The schema's root must therefore be an object. The tool's input comes back
  as the message text (a JSON string) with finish reason ``"stop"``; when streaming, its
  ``input_json_delta`` pieces are relayed as ``token`` events, byte for byte. If the request also
  has tools, they stay callable (``tool_choice`` becomes ``any``: the model must either call one
  of them or answer through the format tool); ``tool_choice="none"`` forces the format tool.
- Usage: Anthropic's ``input_tokens`` leaves out cached input, so ``prompt_tokens`` is
  ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens`` (every input token,
  as other providers count it) and ``cached_tokens`` is ``cache_read_input_tokens``.
- ``stop_reason`` ``"refusal"`` with no output raises :class:`~polyroute.errors.ContentFilteredError`.
  Thinking blocks are not part of the reply text.
- A stream is complete only at ``message_stop``; closing before it raises
  :class:`~polyroute.errors.StreamInterruptedError` (``truncated``). A tool call is emitted whole
  at its ``content_block_stop``; input that is not a JSON object is ``malformed``. An ``error``
  event (``overloaded_error``, ...) raises the matching typed error. Unknown event types are
  ignored, as Anthropic's versioning policy asks of clients.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from polyroute import errors
from polyroute.providers._http import (
    HTTPProvider,
    JSONStreamParser,
    assistant_reply,
    error_from_payload,
    error_from_response,
)
from polyroute.providers._mapping import split_system
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.types import (
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    ContentPart,
    EmbeddingResponse,
    FinishReason,
    ImagePart,
    Message,
    NamedToolChoice,
    TextPart,
    ToolCall,
    Usage,
)

__all__ = ["ANTHROPIC_CAPABILITIES", "DEFAULT_BASE_URL", "AnthropicProvider"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_CAPABILITIES = Capabilities(
    chat=True, stream=True, embeddings=False, tools=True, vision=True, json_output=True
)

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: the HTTP status each documented error ``type`` stands for, for errors sent inside a stream
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_PERMISSIVE_OBJECT = {"type": "object", "additionalProperties": True}
_FORMAT_TOOL_DESCRIPTION = "Give your final answer by calling this tool; its input is the answer, as a JSON object."
_NOT_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


# --------------------------------------------------------------------------- request mapping


def _image(part: ImagePart) -> dict[str, Any]:
    if part.data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": part.media_type, "data": part.data}}
    url = part.url or ""
    if url.startswith("data:"):
        # A data URL is inline bytes; Anthropic takes those as a base64 source, not a URL.
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0]
        if not header.endswith(";base64") or not media_type or not data:
            raise errors.BadRequestError("an image data URL must be base64 and name its media type")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    """Content blocks, leaving out empty text (the API rejects empty text blocks)."""
    if not content:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [
        ({"type": "text", "text": part.text} if isinstance(part, TextPart) else _image(part))
        for part in content
        if not isinstance(part, TextPart) or part.text
    ]


def _json_object(raw: str) -> dict[str, Any] | None:
    """``raw`` parsed as a JSON object (empty text counts as ``{}``), or None when it is not one."""
    try:
        value = _loads(raw) if raw.strip() else {}
    except _JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _tool_input(call: ToolCall) -> dict[str, Any]:
    if call.arguments or not call.raw_arguments:
        return call.arguments
    value = _json_object(call.raw_arguments)
    if value is None:
        raise errors.BadRequestError(f"the arguments of tool call {call.id!r} are not a JSON object")
    return value


def _turn(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """(role, content blocks) of one non-system message."""
    if message.role == "tool":
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if isinstance(message.content, str):
            result["content"] = message.content
        elif message.content:
            result["content"] = _blocks(message.content)
        return "user", [result]
    blocks = _blocks(message.content)
    for call in message.tool_calls or ():
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call)})
    return message.role, blocks


def _results_first(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = [b for b in blocks if b["type"] == "tool_result"]
    if not results or len(results) == len(blocks):
        return blocks
    return results + [b for b in blocks if b["type"] != "tool_result"]


def map_messages(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """The top-level ``system`` text and the alternating ``messages`` list."""
    system, turns = split_system(messages, _turn)
    for turn in turns:
        if turn["role"] == "user":
            turn["content"] = _results_first(turn["content"])
    return ("\n\n".join(system) or None), turns


def _choice(choice: Any) -> dict[str, Any]:
    if isinstance(choice, NamedToolChoice):
        return {"type": "tool", "name": choice.name}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}


def _tools(request: ChatRequest) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
    """(tools, tool_choice, name of the synthetic response-format tool or None)."""
    tools: list[dict[str, Any]] = []
    for tool in request.tools or ():
        spec: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
        if tool.description:
            spec["description"] = tool.description
        tools.append(spec)
    choice = request.tool_choice
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return tools, (_choice(choice) if tools and choice is not None else None), None
    taken = {t["name"] for t in tools}
    name = _NOT_TOOL_NAME.sub("_", fmt.name)[:64] or "response"
    while name in taken:
        name = name[:63] + "_"
    schema = fmt.json_schema if fmt.type == "json_schema" and fmt.json_schema else _PERMISSIVE_OBJECT
    forced: dict[str, Any]
    if isinstance(choice, NamedToolChoice):
        forced = {"type": "tool", "name": choice.name}
    elif not tools or choice == "none":
        forced = {"type": "tool", "name": name}
    else:
        forced = {"type": "any"}
    tools.append({"name": name, "description": _FORMAT_TOOL_DESCRIPTION, "input_schema": schema})
    return tools, forced, name


# --------------------------------------------------------------------------- response mapping


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if type(value) is int else 0


def _usage(raw: Mapping[str, Any]) -> Usage:
    cached = _count(raw, "cache_read_input_tokens")
    prompt = _count(raw, "input_tokens") + _count(raw, "cache_creation_input_tokens") + cached
    completion = _count(raw, "output_tokens")
    return Usage.model_construct(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cached,
        reasoning_tokens=0,
    )


def _finish(stop_reason: Any, calls: list[ToolCall]) -> FinishReason:
    finish = _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    # Only the synthetic format tool was called: that is the answer, not a tool call.
    return "stop" if finish == "tool_calls" and not calls else finish


def _stream_error(provider: str, model: str, payload: dict[str, Any]) -> errors.ProviderError:
    """The typed error for an ``event: error`` (HTTP status already 200, so ``status`` is None)."""
    err = payload.get("error")
    status = _ERROR_STATUS.get(str(err.get("type"))) if isinstance(err, dict) else None
    if status is None:
        return error_from_payload(provider, model, payload, streaming=True)
    exc = error_from_response(provider, model, status, {}, orjson.dumps(payload))
    exc.status = None
    return exc


class _Stream(JSONStreamParser):
    """Turns Anthropic stream events into ours; one instance per call.

    Tool-use blocks are assembled per content-block ``index`` from their ``partial_json``
    pieces; text, and the input of the synthetic format tool, is relayed as it comes.
    """

    __slots__ = ("calls", "format_tool", "reply_id", "stop_reason", "text", "tools", "usage")

    def __init__(self, provider: str, model: str, format_tool: str | None) -> None:
        super().__init__(provider, model)
        self.format_tool = format_tool
        self.reply_id = ""
        self.usage: dict[str, Any] = {}
        #: content-block index -> [id, name, partial_json pieces]; the format tool's pieces are None
        self.tools: dict[int, list[Any]] = {}
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.stop_reason: Any = None

    def _token(self, text: str) -> list[ChatStreamEvent]:
        self.text.append(text)
        return [ChatStreamEvent("token", delta=text, provider=self.provider, model=self.model)]

    def handle(self, kind: str, data: dict[str, Any]) -> list[ChatStreamEvent]:
        if kind == "content_block_delta":
            delta = data["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                return self._token(text) if text else []
            if dtype == "input_json_delta":
                block = self.tools.get(data["index"])
                if block is None:
                    raise self.malformed("input_json_delta for a block that is not a tool_use")
                piece = delta.get("partial_json") or ""
                if block[2] is None:
                    return self._token(piece) if piece else []
                block[2].append(piece)
            return []  # thinking, signature and citation deltas are not part of the reply
        if kind == "content_block_start":
            block = data["content_block"]
            btype = block.get("type")
            if btype == "tool_use":
                name = block.get("name") or ""
                self.tools[data["index"]] = [block.get("id") or "", name, None if name == self.format_tool else []]
            elif btype == "text" and block.get("text"):
                return self._token(block["text"])
            return []
        if kind == "content_block_stop":
            tool = self.tools.pop(data["index"], None)
            if tool is None or tool[2] is None:
                return []
            call = self._call(tool[0], tool[1], "".join(tool[2]))
            self.calls.append(call)
            return [ChatStreamEvent("tool_call", tool_call=call, provider=self.provider, model=self.model)]
        if kind == "message_start":
            message = data["message"]
            self.reply_id = str(message.get("id") or "")
            self._add_usage(message.get("usage"))
        elif kind == "message_delta":
            self.stop_reason = data["delta"].get("stop_reason") or self.stop_reason
            self._add_usage(data.get("usage"))
        elif kind == "message_stop":
            return self._end()
        elif kind == "error":
            raise _stream_error(self.provider, self.model, data)
        return []  # ping, and event types added after this was written

    def _add_usage(self, raw: Any) -> None:
        # message_delta counts are cumulative; a field it leaves out or nulls keeps its value.
        if raw:
            self.usage.update((k, v) for k, v in raw.items() if v is not None)

    def _call(self, call_id: str, name: str, raw: str) -> ToolCall:
        arguments = _json_object(raw)
        if arguments is None or not name:
            raise self.malformed(f"tool call {call_id!r} has no name or its input is not a JSON object")
        return ToolCall.model_construct(id=call_id, name=name, arguments=arguments, raw_arguments=raw or "{}")

    def _end(self) -> list[ChatStreamEvent]:
        text = "".join(self.text)
        if self.stop_reason == "refusal" and not text and not self.calls:
            raise errors.ContentFilteredError("the model refused to answer", provider=self.provider, model=self.model)
        finish = _finish(self.stop_reason, self.calls)
        reply = assistant_reply(
            self.provider,
            self.model,
            reply_id=self.reply_id,
            text=text,
            tool_calls=self.calls,
            finish=finish,
            usage=_usage(self.usage),
        )
        return self.finish(reply)


# --------------------------------------------------------------------------- provider


class AnthropicProvider(HTTPProvider):
    """A client for the Anthropic Messages API; see the module docstring for the mapping."""

    name = "anthropic"
    api_key_env = "ANTHROPIC_API_KEY"
    capabilities = ANTHROPIC_CAPABILITIES

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        name: str = "anthropic",
        anthropic_version: str = "2023-06-01",
        default_max_tokens: int = 4096,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
    ) -> None:
        if default_max_tokens <= 0:
            raise ValueError("default_max_tokens must be positive")
        super().__init__(
            base_url=base_url or DEFAULT_BASE_URL,
            api_key=api_key,
            headers={"anthropic-version": anthropic_version, **(headers or {})},
            max_connections=max_connections,
        )
        self.name = name
        self.anthropic_version = anthropic_version
        self.default_max_tokens = default_max_tokens

    @classmethod
    def from_env(
        cls, name: str = "anthropic", environ: Mapping[str, str] = os.environ, **options: Any
    ) -> AnthropicProvider:
        """Read ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` (the host root, as the SDK takes it).

        ``options`` are constructor keywords (``anthropic_version``, ``headers``, ...) and win
        over the environment.
        """
        settings: dict[str, Any] = {
            "api_key": environ.get("ANTHROPIC_API_KEY") or None,
            "base_url": environ.get("ANTHROPIC_BASE_URL") or None,
            **options,
        }
        return cls(name=name, **settings)

    @property
    def messages_path(self) -> str:
        """``/v1/messages``, or ``/messages`` when the base URL already ends in the version."""
        return "/messages" if self.base_url.endswith("/v1") else "/v1/messages"

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key} if self.api_key else {}

    def messages_body(
        self, model: str, request: ChatRequest, *, stream: bool = False
    ) -> tuple[dict[str, Any], str | None]:
        """The JSON body for ``/v1/messages`` and the synthetic format tool's name (or None)."""
        system, turns = map_messages(request.messages)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": turns,
        }
        if system:
            body["system"] = system
        tools, choice, format_tool = _tools(request)
        if tools:
            body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = request.stop
        if stream:
            body["stream"] = True
        return body, format_tool

    def _unreadable(self, model: str, what: str) -> errors.ProviderUnavailableError:
        return errors.ProviderUnavailableError(
            f"the provider's answer could not be read: {what}", provider=self.name, model=model
        )

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        body, format_tool = self.messages_body(model, request)
        data = await self.post_json(self.messages_path, body, model, limits)
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            if isinstance(data, dict) and data.get("type") == "error":
                raise error_from_payload(self.name, model, data)
            raise self._unreadable(model, "it is not a message object")
        return self._parse(model, data, format_tool)

    def _parse(self, model: str, data: dict[str, Any], format_tool: str | None) -> ChatResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in data["content"]:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(str(block.get("text") or ""))
            elif kind == "tool_use":
                arguments = block.get("input")
                if not isinstance(arguments, dict) or not block.get("name"):
                    raise self._unreadable(model, "a tool_use block has no name or its input is not an object")
                raw = orjson.dumps(arguments).decode()
                if block["name"] == format_tool:
                    texts.append(raw)
                    continue
                calls.append(
                    ToolCall.model_construct(
                        id=str(block.get("id") or ""), name=block["name"], arguments=arguments, raw_arguments=raw
                    )
                )
        text = "".join(texts)
        stop_reason = data.get("stop_reason")
        if stop_reason == "refusal" and not text and not calls:
            raise errors.ContentFilteredError("the model refused to answer", provider=self.name, model=model)
        usage = data.get("usage")
        return assistant_reply(
            self.name,
            model,
            reply_id=str(data.get("id") or ""),
            text=text,
            tool_calls=calls,
            finish=_finish(stop_reason, calls),
            usage=_usage(usage) if isinstance(usage, dict) else Usage(),
        )

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        body, format_tool = self.messages_body(model, request, stream=True)
        parser = _Stream(self.name, model, format_tool)
        async for event in self.relay_sse(self.messages_path, body, model, limits, parser):
            yield event

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        raise errors.UnsupportedFeatureError(
            "the Anthropic API has no embeddings endpoint", provider=self.name, model=model
        )
