"""Google Gemini (Generative Language API): ``generateContent``, SSE streaming, batch embeddings.

What differs from OpenAI's format, and why the code looks the way it does:

- the key travels only in the ``x-goog-api-key`` header (a ``?key=`` query ends up in logs);
- system messages become one ``systemInstruction``; assistant turns have role ``model``;
  tool results are ``functionResponse`` parts of a *user* turn, named after the function,
  not the call id; consecutive turns of the same role are merged because Gemini wants the
  roles to alternate;
- schemas (tool parameters, JSON output) are sent in Gemini's OpenAPI-subset ``Schema``
  through ``parameters`` / ``responseSchema``, converted from JSON Schema here. The newer
  ``parametersJsonSchema`` / ``responseJsonSchema`` fields take JSON Schema as is but only
  work on Gemini 2.5 and later; the subset works on every model, so we convert instead;
- a stream has no ``[DONE]`` marker: a stream is complete only if a chunk carried a
  ``finishReason`` *and* the connection then ended cleanly;
- errors are Google RPC statuses (``{"error": {"code", "message", "status", "details"}}``): a bad
  key is a 400 whose details say ``API_KEY_INVALID``, and a 429's wait is in a ``RetryInfo``
  detail rather than a header.
"""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from polyroute import errors
from polyroute.providers._http import HTTPProvider, error_from_payload, error_from_response, parse_retry_after
from polyroute.providers._mapping import append_turn, text_and_images
from polyroute.providers._schema import gemini_schema
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
    Tool,
    ToolCall,
    Usage,
)

__all__ = ["DEFAULT_BASE_URL", "GeminiProvider", "gemini_error", "gemini_schema", "to_gemini_request"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

_VERSION_SEGMENT = re.compile(r"/v\d+(?:alpha|beta)?\d*$")
_MODEL_NAME = re.compile(r"(?:models/|tunedModels/)?[A-Za-z0-9][A-Za-z0-9._-]*")
_SSE_PARAMS = {"alt": "sse"}
#: Gemini 3 rejects replayed function calls without the signature it issued; we do not keep
#: signatures, so replayed calls carry the sentinel Google documents for calls it did not make.
_SKIP_SIGNATURE = "skip_thought_signature_validator"

_FILTERED = frozenset({
    "SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR",
})
_BAD_TOOL_CALL = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

# --------------------------------------------------------------------------- requests


def _json_object(text: str) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object, or None when it is not one."""
    if not text or text[0] != "{":
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _image(part: ImagePart) -> dict[str, Any]:
    if part.data is not None:
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    url = part.url or ""
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if not comma or not header.endswith(";base64"):
            raise errors.UnsupportedFeatureError("a data: URL image must be base64-encoded")
        mime = part.media_type or header.partition(";")[0] or "application/octet-stream"
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.partition(":")[0].lower() not in ("https", "gs"):
        raise errors.UnsupportedFeatureError("Gemini takes images as base64 data or by https:// or gs:// URL")
    file_data = {"fileUri": url}
    guessed = part.media_type or mimetypes.guess_type(urlsplit(url).path)[0]
    if guessed:
        file_data["mimeType"] = guessed
    return {"fileData": file_data}


def _parts(content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    return text_and_images(content, _image)


def _contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[str]]:
    """Gemini ``contents`` (roles alternating) and the system texts, from our messages."""
    contents: list[dict[str, Any]] = []
    system: list[str] = []
    call_names: dict[str, str] = {}
    for message in messages:
        if message.role == "system":
            system.append(message.text)
            continue
        role = "user"
        if message.role == "tool":
            name = message.name or call_names.get(message.tool_call_id or "")
            if not name:
                raise errors.BadRequestError(
                    f"the tool result for call {message.tool_call_id!r} needs 'name': no earlier call has that id"
                )
            result = _json_object(message.text)
            response = result if result is not None else {"result": message.text}
            parts = [{"functionResponse": {"name": name, "response": response}}]
        else:
            parts = _parts(message.content)
            if message.role == "assistant":
                role = "model"
                for i, call in enumerate(message.tool_calls or ()):
                    call_names[call.id] = call.name
                    args = call.arguments or _json_object(call.raw_arguments) or {}
                    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": args}}
                    if i == 0:
                        part["thoughtSignature"] = _SKIP_SIGNATURE
                    parts.append(part)
        append_turn(contents, role, parts, key="parts")
    return contents, system


def _declaration(tool: Tool) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": tool.name}
    if tool.description:
        decl["description"] = tool.description
    # Gemini refuses an OBJECT with no properties: a function without parameters omits them.
    if tool.parameters.get("properties"):
        decl["parameters"] = gemini_schema(tool.parameters)
    return decl


def to_gemini_request(request: ChatRequest) -> dict[str, Any]:
    """The ``generateContent`` body for ``request``."""
    contents, system = _contents(request.messages)
    body: dict[str, Any] = {}
    if system and contents:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    elif system:  # Gemini needs at least one content: a system-only prompt is sent as the user's
        contents = [{"role": "user", "parts": [{"text": "\n\n".join(system)}]}]
    body["contents"] = contents
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
        choice = request.tool_choice
        if isinstance(choice, str):
            body["toolConfig"] = {"functionCallingConfig": {"mode": _TOOL_MODES[choice]}}
        elif choice is not None:
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice.name]}}
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.stop:
        config["stopSequences"] = request.stop
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema:
            config["responseSchema"] = gemini_schema(fmt.json_schema)
    if config:
        body["generationConfig"] = config
    return body


# --------------------------------------------------------------------------- responses


def _usage(meta: Any) -> Usage | None:
    """Our usage from ``usageMetadata``; completion tokens include thinking, as OpenAI counts them."""
    if not isinstance(meta, dict):
        return None
    count = {k: v for k, v in meta.items() if type(v) is int}
    prompt = count.get("promptTokenCount", 0) + count.get("toolUsePromptTokenCount", 0)
    thoughts = count.get("thoughtsTokenCount", 0)
    completion = count.get("candidatesTokenCount", 0) + thoughts
    return Usage.model_construct(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=count.get("totalTokenCount") or prompt + completion,
        cached_tokens=count.get("cachedContentTokenCount", 0),
        reasoning_tokens=thoughts,
    )


def _read_parts(candidate: dict[str, Any], first_call: int) -> tuple[list[str], list[ToolCall]]:
    """Answer texts (thoughts skipped) and function calls of one candidate, in order."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        text = part.get("text")
        if isinstance(text, str):
            if text:
                texts.append(text)
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            args = call.get("args")
            args = args if isinstance(args, dict) else {}
            call_id = call.get("id")
            calls.append(
                ToolCall.model_construct(
                    id=call_id if isinstance(call_id, str) and call_id else f"call_{first_call + len(calls)}",
                    name=str(call.get("name") or ""),
                    arguments=args,
                    raw_arguments=orjson.dumps(args).decode(),
                )
            )
    return texts, calls


def gemini_error(
    provider: str, model: str, status: int, headers: Mapping[str, str], body: bytes
) -> errors.ProviderError:
    """Map a Gemini error response: the generic mapping, refined by the Google RPC details."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return error_from_response(provider, model, status, headers, body)
    rpc = str(err.get("status") or "")
    message = str(err.get("message") or "") or None
    raw_details = err.get("details")
    details = [d for d in raw_details if isinstance(d, dict)] if isinstance(raw_details, list) else []
    kw: dict[str, Any] = {"provider": provider, "model": model, "status": status, "provider_message": message}
    if rpc == "UNAUTHENTICATED" or any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return errors.AuthenticationError("the provider rejected the API key", **kw)
    if rpc == "FAILED_PRECONDITION":  # e.g. "User location is not supported for the API use."
        return errors.PermissionDeniedError("the provider refuses this call from here", **kw)
    if status == 400 and "exceeds the maximum number of tokens" in (message or ""):
        return errors.ContextLengthExceededError("the input is longer than the model's context window", **kw)
    exc = error_from_response(provider, model, status, headers, body)
    if isinstance(exc, (errors.RateLimitedError, errors.ProviderUnavailableError)) and exc.retry_after is None:
        delay = next((d.get("retryDelay") for d in details if str(d.get("@type")).endswith(".rpc.RetryInfo")), None)
        if isinstance(delay, str):
            exc.retry_after = parse_retry_after({"retry-after": delay})
    return exc


class GeminiProvider(HTTPProvider):
    """Gemini through the Generative Language API (Google AI Studio keys)."""

    name = "gemini"
    api_key_env = "GEMINI_API_KEY"
    capabilities = Capabilities(chat=True, stream=True, embeddings=True, tools=True, vision=True, json_output=True)

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        name: str = "gemini",
        api_version: str = "v1beta",
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
    ) -> None:
        # Like google-genai, the base is the host root and the client adds the API version;
        # a base that already ends in a version segment is used as it is.
        root = (base_url or DEFAULT_BASE_URL).rstrip("/")
        if not _VERSION_SEGMENT.search(root):
            root = f"{root}/{api_version.strip('/')}"
        super().__init__(base_url=root, api_key=api_key, headers=headers, max_connections=max_connections)
        self.name = name

    @classmethod
    def from_env(cls, name: str = "gemini", environ: Mapping[str, str] = os.environ, **options: Any) -> GeminiProvider:
        """Key: ``GEMINI_API_KEY`` else ``GOOGLE_API_KEY``; base: ``GEMINI_BASE_URL`` else ``GEMINI_ENDPOINT``.

        ``options`` are constructor keywords and win over the environment.
        """
        options.setdefault("api_key", environ.get("GEMINI_API_KEY") or environ.get("GOOGLE_API_KEY"))
        options.setdefault("base_url", environ.get("GEMINI_BASE_URL") or environ.get("GEMINI_ENDPOINT"))
        return cls(name=name, **options)

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.api_key} if self.api_key else {}

    def map_error(self, model: str, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        return gemini_error(self.name, model, status, headers, body)

    # ------------------------------------------------------------------ helpers

    def _resource(self, model: str) -> str:
        """``models/<id>`` for a model id given with or without the prefix; refuses path tricks."""
        model = model.strip()
        if not _MODEL_NAME.fullmatch(model):
            raise errors.ModelNotFoundError(f"{model!r} is not a Gemini model name", provider=self.name, model=model)
        return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"

    def _payload(self, model: str, request: ChatRequest) -> dict[str, Any]:
        try:
            return to_gemini_request(request)
        except errors.ProviderError as exc:
            exc.provider, exc.model = self.name, model
            raise

    def _candidate(self, data: Any, model: str) -> dict[str, Any] | None:
        """The first candidate of a response (chunk); raises when the prompt itself was blocked."""
        if not isinstance(data, dict):
            raise errors.ProviderUnavailableError("the answer is not a JSON object", provider=self.name, model=model)
        feedback = data.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            reason = feedback["blockReason"]
            why = str(feedback.get("blockReasonMessage") or reason)
            raise errors.ContentFilteredError(
                f"the provider blocked the prompt ({reason})", provider=self.name, model=model, provider_message=why
            )
        candidates = data.get("candidates")
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            return candidates[0]
        return None

    def _finish(self, reason: Any, model: str, *, output: bool, calls: bool, strict: bool) -> FinishReason:
        """Our finish reason for Gemini's; raises when the stop means there is no usable answer.

        ``strict`` (streaming) raises for every abnormal stop: the text already relayed cannot
        be taken back, so the caller must learn that the answer is incomplete.
        """
        if reason == "STOP":
            return "tool_calls" if calls else "stop"
        if reason == "MAX_TOKENS":
            return "length"
        kw: dict[str, Any] = {"provider": self.name, "model": model, "provider_message": str(reason)}
        if reason in _FILTERED:
            if strict or not output:
                raise errors.ContentFilteredError(f"the provider withheld the answer ({reason})", **kw)
            return "content_filter"
        if reason in _BAD_TOOL_CALL:
            if strict or not output:
                raise errors.ProviderError(f"the model produced a bad function call ({reason})", retryable=True, **kw)
            return "error"
        if not output:
            raise errors.ProviderError(f"the model stopped with no answer ({reason})", retryable=True, **kw)
        return "tool_calls" if calls else "stop"

    # ------------------------------------------------------------------ calls

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        path = f"/{self._resource(model)}:generateContent"
        data = await self.post_json(path, self._payload(model, request), model, limits)
        if "error" in data and "candidates" not in data:
            raise error_from_payload(self.name, model, data)  # an error object under a 200: keep its message
        candidate = self._candidate(data, model)
        if candidate is None:
            raise errors.ProviderUnavailableError("the answer has no candidate", provider=self.name, model=model)
        texts, calls = _read_parts(candidate, 0)
        output = bool(texts or calls)
        finish = self._finish(candidate.get("finishReason"), model, output=output, calls=bool(calls), strict=False)
        usage = _usage(data.get("usageMetadata")) or Usage()
        return self._reply(model, texts, calls, rid=str(data.get("responseId") or ""), finish=finish, usage=usage)

    def _reply(
        self, model: str, texts: list[str], calls: list[ToolCall], *, rid: str, finish: FinishReason, usage: Usage
    ) -> ChatResponse:
        message = Message.model_construct(
            role="assistant", content="".join(texts) or None, tool_calls=calls or None, name=None, tool_call_id=None
        )
        return ChatResponse.model_construct(
            id=rid, message=message, finish_reason=finish, usage=usage, provider=self.name, model=model,
            latency=0.0, attempts=[],
        )

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        path = f"/{self._resource(model)}:streamGenerateContent"
        texts: list[str] = []
        calls: list[ToolCall] = []
        usage: Usage | None = None
        finish: FinishReason | None = None
        response_id = ""
        async with self.open_stream(path, self._payload(model, request), model, limits, params=_SSE_PARAMS) as response:
            async for event in self.iter_sse(response, model):
                chunk = self._decode_chunk(event.data, model)
                candidate = self._candidate(chunk, model)
                usage = _usage(chunk.get("usageMetadata")) or usage
                response_id = response_id or str(chunk.get("responseId") or "")
                if candidate is None:
                    continue
                new_texts, new_calls = _read_parts(candidate, len(calls))
                for text in new_texts:
                    texts.append(text)
                    yield ChatStreamEvent("token", delta=text, provider=self.name, model=model)
                for call in new_calls:
                    calls.append(call)
                    yield ChatStreamEvent("tool_call", tool_call=call, provider=self.name, model=model)
                reason = candidate.get("finishReason")
                if reason:
                    finish = self._finish(reason, model, output=bool(texts or calls), calls=bool(calls), strict=True)
        if finish is None:
            raise errors.StreamInterruptedError(
                "the stream ended without a finishReason", kind="truncated", provider=self.name, model=model
            )
        usage = usage or Usage()
        yield ChatStreamEvent("usage", usage=usage, provider=self.name, model=model)
        reply = self._reply(model, texts, calls, rid=response_id, finish=finish, usage=usage)
        yield ChatStreamEvent("end", usage=usage, finish_reason=finish, response=reply, provider=self.name, model=model)

    def _decode_chunk(self, data: str, model: str) -> dict[str, Any]:
        """One SSE data payload as a response chunk; an in-band error is raised as its typed error."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise errors.StreamInterruptedError(
                "a stream chunk is not a JSON object", kind="malformed", provider=self.name, model=model
            )
        err = chunk.get("error")
        if err is not None:
            code = err.get("code") if isinstance(err, dict) else None
            if type(code) is int and 400 <= code < 600:
                raise gemini_error(self.name, model, code, {}, data.encode())
            raise error_from_payload(self.name, model, chunk, streaming=True)
        return chunk

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        resource = self._resource(model)
        requests: list[dict[str, Any]] = []
        for text in inputs:
            item: dict[str, Any] = {"model": resource, "content": {"parts": [{"text": text}]}}
            if dimensions is not None:
                item["outputDimensionality"] = dimensions
            requests.append(item)
        data = await self.post_json(f"/{resource}:batchEmbedContents", {"requests": requests}, model, limits)
        embeddings = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(embeddings, list) or len(embeddings) != len(inputs):
            got = len(embeddings) if isinstance(embeddings, list) else "none"
            raise errors.ProviderUnavailableError(
                f"asked for {len(inputs)} embeddings, got {got}", provider=self.name, model=model
            )
        vectors: list[list[float]] = [
            v for item in embeddings if isinstance(item, dict) and isinstance(v := item.get("values"), list)
        ]
        if len(vectors) != len(inputs):
            raise errors.ProviderUnavailableError("an embedding has no values", provider=self.name, model=model)
        usage = _usage(data.get("usageMetadata")) or Usage()
        return EmbeddingResponse.model_construct(
            vectors=vectors, usage=usage, provider=self.name, model=model, latency=0.0, attempts=[]
        )
