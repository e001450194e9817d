"""The Converse wire format of AWS Bedrock as pure data mapping, with no I/O or signing.

:mod:`polyroute.providers.bedrock` owns credentials, SigV4 and HTTP; this module turns our
types into a Converse request body, and Converse replies, stream events and AWS error types
back into ours. See that module's docstring for the choices made in the mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from polyroute import errors
from polyroute.providers._http import assistant_reply, error_from_response, parse_retry_after
from polyroute.providers._mapping import split_system, text_and_images
from polyroute.types import (
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    ContentPart,
    FinishReason,
    ImagePart,
    Message,
    NamedToolChoice,
    ToolCall,
    Usage,
)

__all__ = [
    "ConverseStream",
    "bedrock_error",
    "converse_body",
    "converse_reply",
    "finish_reason",
    "json_object",
    "tool_call",
    "usage_from",
]

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_PERMISSIVE_OBJECT = {"type": "object", "additionalProperties": True}
_FORMAT_TOOL_DESCRIPTION = "Give your final answer by calling this tool; its input is the answer, as a JSON object."
_NOT_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_CONTEXT_HINTS = ("too long", "too many input tokens", "context window", "context length")
#: AWS error type (``x-amzn-errortype`` or ``:exception-type``, any case) -> typed error
_ERRORS: dict[str, tuple[type[errors.ProviderError], str]] = {
    "throttlingexception": (errors.RateLimitedError, "rate limited by the provider"),
    "servicequotaexceededexception": (errors.RateLimitedError, "a service quota is exhausted"),
    "accessdeniedexception": (errors.PermissionDeniedError, "the credentials may not use this model"),
    "unrecognizedclientexception": (errors.AuthenticationError, "the provider rejected the credentials"),
    "invalidsignatureexception": (errors.AuthenticationError, "the provider rejected the request signature"),
    "expiredtokenexception": (errors.AuthenticationError, "the session token has expired"),
    "resourcenotfoundexception": (errors.ModelNotFoundError, "model not found"),
    "validationexception": (errors.BadRequestError, "the provider rejected the request"),
    "modeltimeoutexception": (errors.TimeoutError, "the model timed out"),
    "modelnotreadyexception": (errors.ProviderUnavailableError, "the model is not ready"),
    "serviceunavailableexception": (errors.ProviderUnavailableError, "the provider is unavailable"),
    "internalserverexception": (errors.ProviderUnavailableError, "the provider had an internal error"),
    "modelerrorexception": (errors.ProviderUnavailableError, "the model failed"),
    "modelstreamerrorexception": (errors.ProviderUnavailableError, "the model's stream failed"),
}


# --------------------------------------------------------------------------- request mapping


def _image(part: ImagePart) -> dict[str, Any]:
    media: str | None = part.media_type
    data: str | None = part.data
    url = part.url or ""
    if data is None and url.startswith("s3://"):
        guessed = _IMAGE_FORMATS.get(media or "", url.rpartition(".")[2].lower().replace("jpg", "jpeg"))
        return {"image": {"format": guessed, "source": {"s3Location": {"uri": url}}}}
    if data is None and url.startswith("data:"):
        header, comma, encoded = url[5:].partition(",")
        data = encoded
        if not comma or not header.endswith(";base64"):
            raise errors.UnsupportedFeatureError("a data: URL image must be base64-encoded")
        media = media or header.partition(";")[0]
    if data is None:
        raise errors.UnsupportedFeatureError("Bedrock takes images as base64 data or s3:// URIs, not web URLs")
    fmt = _IMAGE_FORMATS.get((media or "").lower())
    if fmt is None:
        raise errors.UnsupportedFeatureError(f"Bedrock does not take {media!r} images (png, jpeg, gif, webp only)")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _blocks(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    return text_and_images(content, _image)


def json_object(raw: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _turn(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        result = json_object(message.text) if message.text[:1] == "{" else None
        content = [{"json": result}] if result is not None else [{"text": message.text or "(empty)"}]
        return "user", [{"toolResult": {"toolUseId": message.tool_call_id, "content": content}}]
    blocks = _blocks(message.content)
    for call in message.tool_calls or ():
        args = call.arguments or json_object(call.raw_arguments) or {}
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": args}})
    return ("assistant" if message.role == "assistant" else "user"), blocks


def _messages(messages: list[Message]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(system blocks, alternating turns) for ``messages``."""
    system, turns = split_system(messages, _turn)
    for turn in turns:  # tool results first in a user turn
        turn["content"].sort(key=lambda block: "toolResult" not in block)
    return [{"text": text} for text in system], turns


def _tool_config(request: ChatRequest) -> tuple[dict[str, Any] | None, str | None]:
    """(``toolConfig``, name of the synthetic response-format tool or None)."""
    tools = [
        {
            "toolSpec": {
                "name": t.name,
                "inputSchema": {"json": t.parameters},
                **({"description": t.description} if t.description else {}),
            }
        }
        for t in request.tools or ()
    ]
    choice = request.tool_choice
    fmt = request.response_format
    format_tool = None
    forced: dict[str, Any] | None = None
    if fmt is not None and fmt.type != "text":
        taken = {t.name for t in request.tools or ()}
        format_tool = _NOT_TOOL_NAME.sub("_", fmt.name)[:64] or "response"
        while format_tool in taken:
            format_tool = format_tool[:63] + "_"
        schema = fmt.json_schema if fmt.type == "json_schema" and fmt.json_schema else _PERMISSIVE_OBJECT
        spec = {"name": format_tool, "description": _FORMAT_TOOL_DESCRIPTION, "inputSchema": {"json": schema}}
        forced = {"tool": {"name": format_tool}} if not tools or choice == "none" else {"any": {}}
        tools.append({"toolSpec": spec})
    if not tools:
        return None, None
    if isinstance(choice, NamedToolChoice):
        forced = {"tool": {"name": choice.name}}
    elif choice == "none" and format_tool is None:
        raise errors.UnsupportedFeatureError("Bedrock Converse has no tool_choice 'none': leave the tools out instead")
    elif forced is None and choice is not None:
        forced = {"auto": {}} if choice == "auto" else {"any": {}}
    config: dict[str, Any] = {"tools": tools}
    if forced is not None:
        config["toolChoice"] = forced
    return config, format_tool


def converse_body(request: ChatRequest) -> tuple[dict[str, Any], str | None]:
    """The Converse request body and the name of the response-format tool (or None)."""
    system, turns = _messages(request.messages)
    body: dict[str, Any] = {"messages": turns}
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    if request.max_tokens is not None:
        inference["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        inference["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = request.stop
    if inference:
        body["inferenceConfig"] = inference
    config, format_tool = _tool_config(request)
    if config is not None:
        body["toolConfig"] = config
    return body, format_tool


# --------------------------------------------------------------------------- response mapping


def usage_from(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    count = {k: v for k, v in raw.items() if type(v) is int}
    cached = count.get("cacheReadInputTokens", 0)
    prompt = count.get("inputTokens", 0) + cached + count.get("cacheWriteInputTokens", 0)
    completion = count.get("outputTokens", 0)
    return Usage.model_construct(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=count.get("totalTokens") or prompt + completion,
        cached_tokens=cached,
        reasoning_tokens=0,
    )


def finish_reason(stop_reason: Any, calls: list[ToolCall], output: bool, provider: str, model: str) -> FinishReason:
    finish = _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    if finish == "content_filter" and not output:
        raise errors.ContentFilteredError(
            f"the provider withheld the answer ({stop_reason})", provider=provider, model=model
        )
    return "stop" if finish == "tool_calls" and not calls else finish  # only the format tool was called


def tool_call(call_id: Any, name: Any, raw: str, arguments: dict[str, Any] | None) -> ToolCall | None:
    if arguments is None or not name or not call_id:
        return None
    return ToolCall.model_construct(id=str(call_id), name=str(name), arguments=arguments, raw_arguments=raw)


def bedrock_error(
    provider: str,
    model: str,
    status: int | None,
    error_type: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
) -> errors.ProviderError:
    """The typed error for an AWS error type (``ThrottlingException``...) and its JSON ``{"message"}``.

    ``status`` is None for an exception frame inside a stream; an unknown type there is a
    ``StreamInterruptedError(provider_error)``, since no status says more.
    """
    kind = error_type.partition(":")[0].strip().lower()
    known = _ERRORS.get(kind)
    if known is None:
        if status is None:
            return errors.StreamInterruptedError(
                f"the provider reported {error_type or 'an error'} mid-stream",
                kind="provider_error",
                provider=provider,
                model=model,
                provider_message=body[:300].decode("utf-8", "replace") or None,
            )
        return error_from_response(provider, model, status, headers or {}, body)
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    raw = (data.get("message") or data.get("Message")) if isinstance(data, dict) else None
    message = str(raw) if raw else (body[:300].decode("utf-8", "replace") or None)
    kw: dict[str, Any] = {"provider": provider, "model": model, "status": status, "provider_message": message}
    cls, text = known
    if cls is errors.BadRequestError:
        lowered = (message or "").lower()
        if any(hint in lowered for hint in _CONTEXT_HINTS):
            return errors.ContextLengthExceededError("the input is longer than the model's context window", **kw)
    if cls in (errors.RateLimitedError, errors.ProviderUnavailableError):
        return cls(text, retry_after=parse_retry_after(headers or {}), **kw)
    return cls(text, **kw)


def converse_reply(data: Any, provider: str, model: str, format_tool: str | None) -> ChatResponse:
    """Our reply for a ``Converse`` answer; the format tool's input becomes the text."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    try:
        for block in data["output"]["message"]["content"]:
            if "text" in block:
                texts.append(str(block["text"]))
            elif "toolUse" in block:
                use = block["toolUse"]
                arguments = use.get("input")
                raw = orjson.dumps(arguments).decode()
                if use.get("name") == format_tool and isinstance(arguments, dict):
                    texts.append(raw)
                    continue
                call = tool_call(
                    use.get("toolUseId"), use.get("name"), raw, arguments if isinstance(arguments, dict) else None
                )
                if call is None:
                    raise TypeError
                calls.append(call)
    except (KeyError, TypeError, AttributeError):
        raise errors.ProviderUnavailableError(
            "the provider's answer could not be read", provider=provider, model=model
        ) from None
    text = "".join(texts)
    finish = finish_reason(data.get("stopReason"), calls, bool(text or calls), provider, model)
    usage = usage_from(data.get("usage"))
    return assistant_reply(provider, model, reply_id="", text=text, tool_calls=calls, finish=finish, usage=usage)


class ConverseStream:
    """ConverseStream events -> ours; one instance per call."""

    def __init__(self, provider: str, model: str, format_tool: str | None) -> None:
        self.provider = provider
        self.model = model
        self.format_tool = format_tool
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        #: content-block index -> [toolUseId, name, input pieces]; None pieces for the format tool
        self.blocks: dict[int, list[Any]] = {}
        self.stop_reason: Any = None
        self.usage: Usage | None = None

    def malformed(self, what: str) -> errors.StreamInterruptedError:
        return errors.StreamInterruptedError(
            f"the provider's stream could not be read: {what}",
            kind="malformed",
            provider=self.provider,
            model=self.model,
        )

    def _token(self, text: str) -> list[ChatStreamEvent]:
        self.text.append(text)
        return [ChatStreamEvent("token", delta=text, provider=self.provider, model=self.model)]

    def handle(self, kind: str, data: dict[str, Any]) -> list[ChatStreamEvent]:
        if kind == "contentBlockDelta":
            delta = data["delta"]
            if "text" in delta:
                return self._token(delta["text"]) if delta["text"] else []
            if "toolUse" in delta:
                block = self.blocks.get(data["contentBlockIndex"])
                if block is None:
                    raise self.malformed("a toolUse delta for a block that did not start as toolUse")
                piece = delta["toolUse"].get("input") or ""
                if block[2] is None:
                    return self._token(piece) if piece else []
                block[2].append(piece)
            return []  # reasoning and citation deltas are not part of the reply
        if kind == "contentBlockStart":
            tool = data["start"].get("toolUse")
            if tool is not None:
                name = tool.get("name")
                self.blocks[data["contentBlockIndex"]] = [
                    tool.get("toolUseId"),
                    name,
                    None if name == self.format_tool else [],
                ]
            return []
        if kind == "contentBlockStop":
            block = self.blocks.pop(data["contentBlockIndex"], None)
            if block is None or block[2] is None:
                return []
            raw = "".join(block[2])
            call = tool_call(block[0], block[1], raw or "{}", json_object(raw))
            if call is None:
                raise self.malformed(f"tool call {block[0]!r} has no id or name, or its input is not a JSON object")
            self.calls.append(call)
            return [ChatStreamEvent("tool_call", tool_call=call, provider=self.provider, model=self.model)]
        if kind == "messageStop":
            self.stop_reason = data.get("stopReason") or "end_turn"
        elif kind == "metadata":
            self.usage = usage_from(data.get("usage"))
        return []  # messageStart, and event types added after this was written

    @property
    def complete(self) -> bool:
        """True once ``messageStop`` and then ``metadata`` (the last event AWS sends) have arrived."""
        return self.stop_reason is not None and self.usage is not None

    def end(self) -> list[ChatStreamEvent]:
        text = "".join(self.text)
        output = bool(text or self.calls)
        finish = finish_reason(self.stop_reason, self.calls, output, self.provider, self.model)
        usage = self.usage or Usage()
        reply = assistant_reply(
            self.provider, self.model, reply_id="", text=text, tool_calls=self.calls, finish=finish, usage=usage
        )
        return [
            ChatStreamEvent("usage", usage=usage, provider=self.provider, model=self.model),
            ChatStreamEvent(
                "end", finish_reason=finish, usage=usage, response=reply, provider=self.provider, model=self.model
            ),
        ]
