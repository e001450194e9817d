"""The OpenAI Chat Completions and Embeddings wire format.

One client for OpenAI itself and for every server that copies its API (Groq, OpenRouter,
vLLM, Ollama, ... see :mod:`polyroute.providers.presets`). As in the official SDK the base
URL includes the version segment (``https://api.openai.com/v1``); requests go to
``{base}/chat/completions`` and ``{base}/embeddings``.

Choices made where the wire format leaves room:

- A stream is complete only when ``data: [DONE]`` arrives. A connection that closes before
  it, even after a ``finish_reason``, raises :class:`~polyroute.errors.StreamInterruptedError`
  (``truncated``): without the marker nothing proves the trailing usage chunk was not lost.
- Tool calls are emitted whole, one ``tool_call`` event each, when the choice's
  ``finish_reason`` arrives (or at ``[DONE]`` from servers that never send one). Arguments
  that are not a JSON object raise ``StreamInterruptedError(kind="malformed")`` when streaming
  and :class:`~polyroute.errors.ProviderUnavailableError` otherwise: the model's output is
  unusable, and another attempt or candidate may do better.
- The ``usage`` event is emitted once, just before ``end``, from the last usage the server
  sent (the ``include_usage`` chunk, or whatever usage a server attached to other chunks).
- ``finish_reason`` ``"stop"`` with tool calls present becomes ``"tool_calls"`` (some
  compatible servers say "stop"); ``"content_filter"`` with no output at all raises
  :class:`~polyroute.errors.ContentFilteredError`.
"""

from __future__ import annotations

import array
import base64
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Literal, cast

import orjson

from polyroute import errors
from polyroute.providers._http import HTTPProvider, error_from_payload
from polyroute.providers._sse import SSEDecoder
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.types import (
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    ContentPart,
    EmbeddingResponse,
    FinishReason,
    Message,
    NamedToolChoice,
    TextPart,
    ToolCall,
    Usage,
)

__all__ = ["DEFAULT_BASE_URL", "OPENAI_CAPABILITIES", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
OPENAI_CAPABILITIES = Capabilities(chat=True, stream=True, embeddings=True, tools=True, vision=True, json_output=True)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
}
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


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


def _message(message: Message) -> dict[str, Any]:
    role = message.role
    if role == "tool":
        # Tool results are text; the tool message has no ``name`` in this format.
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    out: dict[str, Any] = {"role": role, "content": _content(message.content)}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.raw_arguments or orjson.dumps(call.arguments).decode(),
                },
            }
            for call in message.tool_calls
        ]
    elif out["content"] is None:
        out["content"] = ""
    if message.name:
        out["name"] = message.name
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, NamedToolChoice):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


# --------------------------------------------------------------------------- response mapping


def _assistant(content: str | None, tool_calls: list[ToolCall]) -> Message:
    return Message.model_construct(
        role="assistant", content=content, tool_calls=tool_calls or None, name=None, tool_call_id=None
    )


class _BadToolCall(ValueError):
    """A tool call whose name is missing or whose arguments are not a JSON object."""


def _tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    if not name:
        raise _BadToolCall(f"tool call {call_id!r} has no function name")
    try:
        arguments = _loads(raw) if raw.strip() else {}
    except _JSONDecodeError:
        raise _BadToolCall(f"the arguments of tool call {name!r} are not valid JSON") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise _BadToolCall(f"the arguments of tool call {name!r} are not a JSON object")
    return ToolCall.model_construct(id=call_id, name=name, arguments=arguments, raw_arguments=raw)


def _count(value: Any) -> int:
    return value if type(value) is int else int(value) if isinstance(value, float) else 0


def _usage(raw: Any) -> Usage:
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


def _vector(raw: Any) -> list[float]:
    if isinstance(raw, str):  # base64 float32, from servers that ignore ``encoding_format``
        return array.array("f", base64.b64decode(raw)).tolist()
    if not isinstance(raw, list):
        raise TypeError("an embedding is neither a list nor base64")
    return raw


class _ToolCallBuffer:
    """Streamed tool calls, assembled by ``index`` from their argument pieces."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        # index -> [id, name, argument pieces]
        self._calls: dict[int, list[Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, deltas: Any) -> None:
        for delta in deltas:
            index = delta.get("index")
            if type(index) is not int:
                # Servers that omit ``index`` send one call per delta with an id, then pieces.
                index = len(self._calls) if delta.get("id") or not self._calls else max(self._calls)
            slot = self._calls.get(index)
            if slot is None:
                slot = self._calls[index] = [delta.get("id") or "", "", []]
            elif delta.get("id"):
                slot[0] = delta["id"]
            function = delta.get("function")
            if function:
                if function.get("name"):
                    slot[1] = function["name"]
                piece = function.get("arguments")
                if piece:
                    slot[2].append(piece)

    def drain(self) -> list[ToolCall]:
        calls = [
            _tool_call(call_id or f"call_{index}", name, "".join(pieces))
            for index, (call_id, name, pieces) in sorted(self._calls.items())
        ]
        self._calls.clear()
        return calls


class _StreamState:
    """What one stream has said so far, and the events its chunks complete.

    :meth:`feed` takes one chunk's JSON text and returns its new text (the hot path: one
    ``orjson.loads`` and a few dict lookups); rarer events (whole tool calls) are queued on
    :attr:`ready`. :meth:`done` turns ``[DONE]`` into the closing ``usage`` and ``end`` events.
    """

    __slots__ = ("emitted", "finish", "model", "pending", "provider", "ready", "response_id", "text", "usage")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.text: list[str] = []
        self.emitted: list[ToolCall] = []
        self.pending = _ToolCallBuffer()
        self.ready: list[ChatStreamEvent] = []
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None
        self.response_id = ""

    def _malformed(self, what: str) -> errors.StreamInterruptedError:
        return errors.StreamInterruptedError(
            f"the provider's stream could not be read: {what}", kind="malformed", provider=self.provider, model=self.model
        )

    def feed(self, data: str) -> str | None:
        try:
            chunk = _loads(data)
        except _JSONDecodeError:
            raise self._malformed("a chunk is not valid JSON") from None
        if type(chunk) is not dict:
            raise self._malformed("a chunk is not a JSON object")
        if "error" in chunk or chunk.get("object") == "error":
            raise error_from_payload(self.provider, self.model, chunk, streaming=True)
        content = None
        choices = chunk.get("choices")
        try:
            if choices:
                choice = choices[0]
                delta = choice.get("delta")
                if delta:
                    content = delta.get("content") or delta.get("refusal")
                    if content:
                        self.text.append(content)
                    deltas = delta.get("tool_calls")
                    if deltas:
                        self.pending.add(deltas)
                reason = choice.get("finish_reason")
                if reason:
                    self._release_tool_calls()
                    self.finish = _finish(reason, bool(self.emitted))
            usage = chunk.get("usage")
        except (AttributeError, TypeError, KeyError, IndexError):
            raise self._malformed("a chunk does not have the chat.completion.chunk shape") from None
        if usage:
            self.usage = _usage(usage)
        if not self.response_id:
            self.response_id = str(chunk.get("id") or "")
        return content if type(content) is str else None

    def _release_tool_calls(self) -> None:
        if not self.pending:
            return
        try:
            calls = self.pending.drain()
        except _BadToolCall as exc:
            raise self._malformed(str(exc)) from None
        except TypeError:
            raise self._malformed("tool-call arguments are not text") from None
        self.emitted.extend(calls)
        self.ready.extend(
            ChatStreamEvent("tool_call", tool_call=call, provider=self.provider, model=self.model) for call in calls
        )

    def done(self) -> list[ChatStreamEvent]:
        self._release_tool_calls()  # from servers that never sent a finish_reason
        events, self.ready = self.ready, []
        reason = self.finish or ("tool_calls" if self.emitted else "stop")
        if reason == "content_filter" and not self.text and not self.emitted:
            raise errors.ContentFilteredError(
                "the provider's content filter withheld the reply", provider=self.provider, model=self.model
            )
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


# --------------------------------------------------------------------------- provider


class OpenAIProvider(HTTPProvider):
    """A client for the OpenAI API or any server that speaks its chat/embeddings format.

    The key defaults to the ``api_key_env`` variable and the base URL to ``base_url_env``
    (as the official SDK does); :meth:`from_env` reads an explicit mapping instead. Local
    servers need no key: pass ``require_key=False``. ``max_tokens_param`` names the field
    that carries ``max_tokens`` (newer OpenAI models want ``"max_completion_tokens"``;
    compatible servers mostly know only ``"max_tokens"``). ``stream_usage=False`` leaves out
    ``stream_options`` for servers that reject it (Mistral).
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        name: str = "openai",
        headers: Mapping[str, str] | None = None,
        organization: str | None = None,
        max_connections: int = 100,
        api_key_env: str | None = "OPENAI_API_KEY",
        require_key: bool = True,
        base_url_env: str | None = "OPENAI_BASE_URL",
        capabilities: Capabilities | None = None,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        stream_usage: bool = True,
    ) -> None:
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
        if base_url is None and base_url_env:
            base_url = os.environ.get(base_url_env)
        extra = dict(headers or {})
        if organization:
            extra["OpenAI-Organization"] = organization
        super().__init__(
            base_url=base_url or DEFAULT_BASE_URL, api_key=api_key, headers=extra, max_connections=max_connections
        )
        self.name = name
        self.api_key_env = api_key_env
        self.require_key = require_key
        self.capabilities = capabilities or OPENAI_CAPABILITIES
        self.max_tokens_param = max_tokens_param
        self.stream_usage = stream_usage

    @classmethod
    def from_env(cls, name: str = "openai", environ: Mapping[str, str] = os.environ, **options: Any) -> OpenAIProvider:
        """Read ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (or ``OPENAI_ENDPOINT``) and ``OPENAI_ORG_ID``."""
        options.setdefault("organization", environ.get("OPENAI_ORG_ID") or None)
        return cls(
            api_key=environ.get("OPENAI_API_KEY") or "",
            base_url=environ.get("OPENAI_BASE_URL") or environ.get("OPENAI_ENDPOINT") or DEFAULT_BASE_URL,
            name=name,
            **options,
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> OpenAIProvider:
        """A provider for a known OpenAI-compatible service; see :mod:`polyroute.providers.presets`."""
        from polyroute.providers.presets import preset

        return preset(name, **overrides)

    def missing_config(self) -> str | None:
        if self.require_key and not self.api_key:
            return self.api_key_env or "api_key"
        return None

    def _redact(self, exc: errors.PolyrouteError) -> errors.PolyrouteError:
        """Scrub the key from a message a server echoed back (some compatible servers do)."""
        key = self.api_key
        if key and exc.provider_message and key in exc.provider_message:
            exc.provider_message = exc.provider_message.replace(key, "[redacted]")
        return exc

    # ------------------------------------------------------------------ request body

    def chat_body(self, model: str, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body for ``/chat/completions`` (``metadata`` is ours and is not sent)."""
        body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": (
                        {"name": t.name, "description": t.description, "parameters": t.parameters}
                        if t.description
                        else {"name": t.name, "parameters": t.parameters}
                    ),
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.max_tokens is not None:
            body[self.max_tokens_param] = request.max_tokens
        if request.stop:
            body["stop"] = request.stop
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            if fmt.type == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": fmt.name, "schema": fmt.json_schema, "strict": fmt.strict},
                }
            else:
                body["response_format"] = {"type": "json_object"}
        if stream:
            body["stream"] = True
            if self.stream_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    # ------------------------------------------------------------------ chat

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        try:
            data = await self.post_json("/chat/completions", self.chat_body(model, request), model, limits)
            return self._chat_response(data, model)
        except errors.PolyrouteError as exc:
            raise self._redact(exc) from None

    def _unreadable(self, model: str, what: str) -> errors.ProviderUnavailableError:
        return errors.ProviderUnavailableError(f"the provider's answer could not be read: {what}", provider=self.name, model=model)

    def _chat_response(self, data: Any, model: str) -> ChatResponse:
        if not isinstance(data, dict):
            raise self._unreadable(model, "the body is not a JSON object")
        if "error" in data or data.get("object") == "error":
            raise error_from_payload(self.name, model, data)
        choices = data.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise self._unreadable(model, "it has no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise self._unreadable(model, "the choice has no message")
        content = _text(message.get("content")) or _text(message.get("refusal"))
        tool_calls: list[ToolCall] = []
        try:
            for raw in message.get("tool_calls") or ():
                function = raw.get("function") or {}
                arguments = function.get("arguments")
                tool_calls.append(
                    _tool_call(
                        str(raw.get("id") or f"call_{len(tool_calls)}"),
                        str(function.get("name") or ""),
                        arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode(),
                    )
                )
        except _BadToolCall as exc:
            raise self._unreadable(model, str(exc)) from None
        except (AttributeError, TypeError):
            raise self._unreadable(model, "a tool call is not an object") from None
        finish = _finish(choice.get("finish_reason"), bool(tool_calls))
        if finish == "content_filter" and not content and not tool_calls:
            raise errors.ContentFilteredError(
                "the provider's content filter withheld the reply", provider=self.name, model=model
            )
        return ChatResponse.model_construct(
            id=str(data.get("id") or ""),
            message=_assistant(content, tool_calls),
            finish_reason=finish,
            usage=_usage(data.get("usage")),
            provider=self.name,
            model=model,
            latency=0.0,
            attempts=[],
        )

    # ------------------------------------------------------------------ streaming

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        """Relay ``choices[0].delta.content`` byte for byte; see the module docstring for the rest."""
        payload = self.chat_body(model, request, stream=True)
        state = _StreamState(self.name, model)
        try:
            async with self.open_stream("/chat/completions", payload, model, limits) as response:
                reads = cast("AsyncGenerator[bytes, None]", self.iter_bytes(response, model))
                async with aclosing(reads):
                    decoder = SSEDecoder()
                    while True:
                        raw = await anext(reads, None)
                        for sse in decoder.feed(raw) if raw is not None else decoder.close():
                            if sse.data == "[DONE]":
                                for event in state.done():
                                    yield event
                                return
                            token = state.feed(sse.data)
                            if token:
                                yield ChatStreamEvent("token", delta=token, provider=state.provider, model=model)
                            if state.ready:
                                for event in state.ready:
                                    yield event
                                state.ready.clear()
                        if raw is None:
                            break
                    cut = "in the middle of an event" if decoder.has_partial else "before its [DONE] marker"
                    raise errors.StreamInterruptedError(
                        f"the stream ended {cut}", kind="truncated", provider=self.name, model=model
                    )
        except errors.PolyrouteError as exc:
            raise self._redact(exc) from None

    # ------------------------------------------------------------------ embeddings

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        body: dict[str, Any] = {"model": model, "input": inputs, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        try:
            data = await self.post_json("/embeddings", body, model, limits)
        except errors.PolyrouteError as exc:
            raise self._redact(exc) from None
        if isinstance(data, dict) and ("error" in data or data.get("object") == "error"):
            raise error_from_payload(self.name, model, data)
        try:
            items = data["data"]
            # Servers may answer out of order; ``index`` says which input each vector is for.
            ordered = sorted(items, key=lambda item: item["index"]) if all("index" in i for i in items) else items
            vectors = [_vector(item["embedding"]) for item in ordered]
            indices = [item.get("index", n) for n, item in enumerate(ordered)]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._unreadable(model, "it does not have the embeddings shape") from None
        if indices != list(range(len(inputs))):
            raise self._unreadable(model, f"asked for {len(inputs)} embeddings, got indices {indices[:8]}")
        usage = data.get("usage")
        return EmbeddingResponse.model_construct(
            vectors=vectors,
            usage=_usage(usage) if usage else Usage(),
            provider=self.name,
            model=model,
            latency=0.0,
            attempts=[],
        )
