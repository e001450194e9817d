"""The Cohere v2 Chat and Embed wire format (``POST /v2/chat``, ``POST /v2/embed``).

As the official SDK does, the base URL is the host root (``https://api.cohere.com``) and the
client adds ``/v2/chat`` and ``/v2/embed``; a base that already ends in ``/v2`` is accepted
too. The key is a Bearer token.

Choices made where the two formats differ:

- Messages keep their roles. An assistant message with tool calls carries its text as
  ``tool_plan`` (Cohere's place for the model's reasoning before it calls tools); a ``tool``
  message is ``{"role": "tool", "tool_call_id", "content"}``. Replies ignore ``tool_plan``
  (and streams ignore ``tool-plan-delta``): it is the model thinking aloud, not its answer.
- ``tool_choice``: ``"required"`` is ``REQUIRED``, ``"none"`` is ``NONE``, ``"auto"`` is the
  default and is left out. Naming one tool is not possible in this format and raises
  :class:`~polyroute.errors.UnsupportedFeatureError` before anything is sent.
- ``top_p`` is sent as ``p``, clamped to Cohere's 0.01..0.99. ``response_format`` is
  ``{"type": "json_object"}`` plus ``json_schema`` when the request has one.
- Images are ``image_url`` content parts (HTTP URLs or base64 data URLs): the v2 Chat API
  accepts them for vision models such as Command A Vision; other models reject them.
- Finish reasons ``COMPLETE``/``STOP_SEQUENCE`` map to ``stop``, ``MAX_TOKENS`` to ``length``,
  ``TOOL_CALL`` to ``tool_calls``; ``ERROR`` raises :class:`~polyroute.errors.ProviderUnavailableError`
  and ``TIMEOUT`` :class:`~polyroute.errors.TimeoutError`, as a failed call.
- Usage comes from ``usage.tokens`` (what the model saw and wrote), falling back to
  ``usage.billed_units``; ``cached_tokens`` is read when present.
- Streams are SSE events whose JSON ``type`` names them (the ``event:`` line says the same).
  A stream is complete only at ``message-end``; a tool call is emitted whole at its
  ``tool-call-end``. Nothing after ``message-end`` is read (so a trailing ``data: [DONE]``,
  which some compatible servers add, does no harm).
- Embeddings ask for ``float`` vectors with ``input_type`` ``search_document`` (configurable);
  more than 96 texts (the API's limit per call) are sent as several calls, in order.
- Cohere's own statuses are mapped by meaning: 498 (invalid token) as 401, 402 (payment
  required) as 403, 499 (request cancelled) as 503.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from polyroute import errors
from polyroute.providers._http import HTTPProvider, JSONStreamParser, assistant_reply, error_from_response
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

__all__ = ["COHERE_CAPABILITIES", "DEFAULT_BASE_URL", "CohereProvider"]

DEFAULT_BASE_URL = "https://api.cohere.com"
COHERE_CAPABILITIES = Capabilities(chat=True, stream=True, embeddings=True, tools=True, vision=True, json_output=True)

_EMBED_BATCH = 96
_FINISH: dict[str, FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
_TOOL_CHOICE = {"required": "REQUIRED", "none": "NONE"}
#: Cohere-specific statuses, and the standard status whose meaning each carries
_STATUS_MEANING = {498: 401, 402: 403, 499: 503}
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


# --------------------------------------------------------------------------- request mapping


def _image_url(part: ImagePart) -> dict[str, Any]:
    image: dict[str, Any] = {"url": part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"}
    if part.detail:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _user_content(content: str | list[ContentPart] | None) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    return [{"type": "text", "text": p.text} if isinstance(p, TextPart) else _image_url(p) for p in content]


def _arguments_text(call: ToolCall) -> str:
    return call.raw_arguments or orjson.dumps(call.arguments).decode()


def _message(message: Message) -> dict[str, Any] | None:
    """One v2 chat message, or None for an assistant turn that says nothing at all."""
    role = message.role
    if role == "user":
        return {"role": "user", "content": _user_content(message.content)}
    if role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    if role == "system":
        return {"role": "system", "content": message.text}
    if not message.tool_calls:
        return {"role": "assistant", "content": message.text} if message.text else None
    out: dict[str, Any] = {
        "role": "assistant",
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments_text(c)}}
            for c in message.tool_calls
        ],
    }
    if message.text:
        out["tool_plan"] = message.text
    return out


# --------------------------------------------------------------------------- response mapping


def _number(raw: Any, key: str) -> int:
    value = raw.get(key) if isinstance(raw, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    counted = raw.get("tokens") if isinstance(raw.get("tokens"), dict) else raw.get("billed_units")
    prompt, completion = _number(counted, "input_tokens"), _number(counted, "output_tokens")
    return Usage.model_construct(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=_number(raw, "cached_tokens"),
        reasoning_tokens=0,
    )


def _finish(provider: str, model: str, reason: Any, detail: Any = None) -> FinishReason:
    """Our finish reason, or the typed error for a generation that failed."""
    if reason == "ERROR":
        message = str(detail) if detail else None
        raise errors.ProviderUnavailableError(
            "the generation failed on the provider", provider=provider, model=model, provider_message=message
        )
    if reason == "TIMEOUT":
        raise errors.TimeoutError(
            "the generation timed out on the provider", kind="total", provider=provider, model=model
        )
    return _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"


def _parse_arguments(raw: Any) -> tuple[str, dict[str, Any]] | None:
    """(raw text, parsed object) of a tool call's arguments, or None when they are not an object."""
    text = raw if isinstance(raw, str) else orjson.dumps(raw if raw is not None else {}).decode()
    try:
        value = _loads(text) if text.strip() else {}
    except _JSONDecodeError:
        return None
    return (text, value) if isinstance(value, dict) else None


class _Stream(JSONStreamParser):
    """Turns Cohere v2 stream events into ours; one instance per call."""

    __slots__ = ("calls", "reply_id", "slots", "text")

    def __init__(self, provider: str, model: str) -> None:
        super().__init__(provider, model)
        self.reply_id = ""
        #: tool-call index -> [id, name, argument pieces]
        self.slots: dict[int, list[Any]] = {}
        self.text: list[str] = []
        self.calls: list[ToolCall] = []

    def handle(self, kind: str, data: dict[str, Any]) -> list[ChatStreamEvent]:
        if kind in ("content-delta", "content-start"):
            # Reasoning models send "thinking" content parts, which have no "text".
            text = data["delta"]["message"]["content"].get("text")
            if not text:
                return []
            self.text.append(text)
            return [ChatStreamEvent("token", delta=text, provider=self.provider, model=self.model)]
        if kind in ("tool-call-start", "tool-call-delta"):
            call = data["delta"]["message"]["tool_calls"]
            if isinstance(call, list):
                call = call[0]
            index = data.get("index", 0)  # documented on every tool-call event; calls come one after another
            piece = (call.get("function") or {}).get("arguments")
            if kind == "tool-call-start":
                self.slots[index] = [call.get("id") or "", call["function"].get("name") or "", []]
            elif index not in self.slots:
                raise self.malformed("tool-call-delta for a tool call that never started")
            if piece:
                self.slots[index][2].append(piece)
            return []
        if kind == "tool-call-end":
            slot = self.slots.pop(data.get("index", 0), None)
            if slot is None:
                raise self.malformed("tool-call-end for a tool call that never started")
            parsed = _parse_arguments("".join(slot[2]))
            if parsed is None or not slot[1]:
                raise self.malformed(f"tool call {slot[0]!r} has no name or its arguments are not a JSON object")
            call = ToolCall.model_construct(id=slot[0], name=slot[1], arguments=parsed[1], raw_arguments=parsed[0])
            self.calls.append(call)
            return [ChatStreamEvent("tool_call", tool_call=call, provider=self.provider, model=self.model)]
        if kind == "message-start":
            self.reply_id = str(data.get("id") or "")
        elif kind == "message-end":
            delta = data.get("delta") or {}
            reply = assistant_reply(
                self.provider,
                self.model,
                reply_id=self.reply_id,
                text="".join(self.text),
                tool_calls=self.calls,
                finish=_finish(self.provider, self.model, delta.get("finish_reason"), delta.get("error")),
                usage=_usage(delta.get("usage")),
            )
            return self.finish(reply)
        return []  # content-end, tool-plan-delta, citations, debug, and newer event types


# --------------------------------------------------------------------------- provider


class CohereProvider(HTTPProvider):
    """A client for Cohere's v2 Chat and Embed APIs; see the module docstring for the mapping."""

    name = "cohere"
    api_key_env = "COHERE_API_KEY"
    capabilities = COHERE_CAPABILITIES

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        name: str = "cohere",
        input_type: str = "search_document",
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
    ) -> None:
        super().__init__(
            base_url=base_url or DEFAULT_BASE_URL, api_key=api_key, headers=headers, max_connections=max_connections
        )
        self.name = name
        self.input_type = input_type

    @classmethod
    def from_env(cls, name: str = "cohere", environ: Mapping[str, str] = os.environ, **options: Any) -> CohereProvider:
        """Read ``COHERE_API_KEY`` (or the SDK's ``CO_API_KEY``) and ``COHERE_BASE_URL`` (or ``CO_API_URL``).

        ``options`` are constructor keywords (``input_type``, ``headers``, ...) and win over the
        environment.
        """
        settings: dict[str, Any] = {
            "api_key": environ.get("COHERE_API_KEY") or environ.get("CO_API_KEY") or None,
            "base_url": environ.get("COHERE_BASE_URL") or environ.get("CO_API_URL") or None,
            **options,
        }
        return cls(name=name, **settings)

    def path(self, endpoint: str) -> str:
        """``/v2/<endpoint>``, or ``/<endpoint>`` when the base URL already ends in ``/v2``."""
        return f"/{endpoint}" if self.base_url.endswith("/v2") else f"/v2/{endpoint}"

    def map_error(self, model: str, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        exc = error_from_response(self.name, model, _STATUS_MEANING.get(status, status), headers, body)
        exc.status = status
        return exc

    def chat_body(self, model: str, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body for ``/v2/chat`` (``metadata`` is ours and is not sent)."""
        messages = [m for m in map(_message, request.messages) if m is not None]
        body: dict[str, Any] = {"model": model, "messages": messages}
        if request.tools:
            body["tools"] = [
                {"type": "function", "function": {"name": t.name, "parameters": t.parameters}} for t in request.tools
            ]
            for tool, spec in zip(request.tools, body["tools"], strict=True):
                if tool.description:
                    spec["function"]["description"] = tool.description
        choice = request.tool_choice
        if isinstance(choice, NamedToolChoice):
            raise errors.UnsupportedFeatureError(
                "Cohere cannot be made to call one named tool (only REQUIRED or NONE)", provider=self.name, model=model
            )
        if request.tools and choice in _TOOL_CHOICE:
            body["tool_choice"] = _TOOL_CHOICE[choice]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["p"] = min(max(request.top_p, 0.01), 0.99)
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.stop:
            body["stop_sequences"] = request.stop
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            body["response_format"] = {"type": "json_object"}
            if fmt.type == "json_schema":
                body["response_format"]["json_schema"] = fmt.json_schema
        if stream:
            body["stream"] = True
        return body

    def _unreadable(self, model: str, what: str) -> errors.ProviderUnavailableError:
        return errors.ProviderUnavailableError(
            f"the provider's answer could not be read: {what}", provider=self.name, model=model
        )

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        data = await self.post_json(self.path("chat"), self.chat_body(model, request), model, limits)
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            raise self._unreadable(model, "it has no message")
        try:
            text = "".join(c.get("text") or "" for c in message.get("content") or () if c.get("type") == "text")
            calls = [self._call(model, raw) for raw in message.get("tool_calls") or ()]
        except (AttributeError, TypeError):
            raise self._unreadable(model, "its content or tool calls are not objects") from None
        return assistant_reply(
            self.name,
            model,
            reply_id=str(data.get("id") or ""),
            text=text,
            tool_calls=calls,
            finish=_finish(self.name, model, data.get("finish_reason")),
            usage=_usage(data.get("usage")),
        )

    def _call(self, model: str, raw: dict[str, Any]) -> ToolCall:
        function = raw.get("function") or {}
        parsed = _parse_arguments(function.get("arguments"))
        if parsed is None or not function.get("name"):
            raise self._unreadable(model, "a tool call has no name or its arguments are not a JSON object")
        return ToolCall.model_construct(
            id=str(raw.get("id") or ""), name=function["name"], arguments=parsed[1], raw_arguments=parsed[0]
        )

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        body = self.chat_body(model, request, stream=True)
        async for event in self.relay_sse(self.path("chat"), body, model, limits, _Stream(self.name, model)):
            yield event

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        batches = [inputs[i : i + _EMBED_BATCH] for i in range(0, len(inputs), _EMBED_BATCH)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._embed_batch(model, b, limits, dimensions)) for b in batches]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        vectors: list[list[float]] = []
        usage = Usage()
        for task in tasks:
            batch_vectors, batch_usage = task.result()
            vectors.extend(batch_vectors)
            usage += batch_usage
        # Each batch was checked; vectors are not re-validated float by float.
        return EmbeddingResponse.model_construct(vectors=vectors, usage=usage, provider=self.name, model=model)

    async def _embed_batch(
        self, model: str, texts: list[str], limits: CallLimits, dimensions: int | None
    ) -> tuple[list[list[float]], Usage]:
        body: dict[str, Any] = {
            "model": model,
            "texts": texts,
            "input_type": self.input_type,
            "embedding_types": ["float"],
        }
        if dimensions is not None:
            body["output_dimension"] = dimensions
        data = await self.post_json(self.path("embed"), body, model, limits)
        try:
            vectors = data["embeddings"]["float"]
            billed = (data.get("meta") or {}).get("billed_units")
        except (KeyError, TypeError, AttributeError):
            raise self._unreadable(model, "it has no embeddings.float") from None
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise self._unreadable(model, f"asked for {len(texts)} embeddings, got a different number")
        if not all(isinstance(v, list) for v in vectors):
            raise self._unreadable(model, "an embedding is not a list of numbers")
        prompt = _number(billed, "input_tokens")
        return vectors, Usage.model_construct(
            prompt_tokens=prompt, completion_tokens=0, total_tokens=prompt, cached_tokens=0, reasoning_tokens=0
        )
