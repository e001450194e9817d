"""Ollama's native API: ``POST /api/chat`` (one JSON object, or an NDJSON stream) and ``/api/embed``.

Ollama streams newline-delimited JSON: one object per line, each ``{"message": {"content":
...}, "done": false}``, then a last ``{"done": true, "done_reason", "prompt_eval_count",
"eval_count", ...}``. An error after the stream started arrives as a line ``{"error": "..."}``
(the status is already 200). A stream that ends without its ``done`` line was cut short.

Tool calls come with ``arguments`` as a JSON *object* and, in older servers, no id; ids are
derived from the call's position, name and arguments, so the same answer always gets the
same ids (a retried or replayed response stays consistent with the history that echoes it).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
import orjson

from polyroute import errors
from polyroute.providers._http import HTTPProvider
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.types import (
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    EmbeddingResponse,
    FinishReason,
    ImagePart,
    Message,
    NamedToolChoice,
    ToolCall,
    Usage,
)

__all__ = ["DEFAULT_HOST", "NDJSONSplitter", "OllamaProvider", "base_url_from_env", "parse_host"]

DEFAULT_HOST = "http://127.0.0.1:11434"
_DATA_URL = re.compile(r"data:[^;,]*;base64,(.*)", re.DOTALL)


def parse_host(value: str | None) -> str:
    """``OLLAMA_HOST`` as the ollama client reads it: scheme defaults to http, port to 11434.

    ``"127.0.0.1:11434"``, ``":8080"``, ``"https://ollama.example"`` (port 443) and
    ``"host/prefix"`` all work; an empty value means the local default.
    """
    value = (value or "").strip()
    scheme, sep, rest = value.partition("://")
    port = 11434
    if not sep:
        scheme, rest = "http", value
    elif scheme in ("http", "https"):
        port = 80 if scheme == "http" else 443
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    host = split.hostname or "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{host}:{split.port or port}" + (f"/{path}" if path else "")


def base_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``OLLAMA_BASE_URL`` if set, else ``OLLAMA_HOST``, else the local default."""
    env = os.environ if environ is None else environ
    return parse_host(env.get("OLLAMA_BASE_URL") or env.get("OLLAMA_HOST"))


class NDJSONSplitter:
    """Feed raw bytes; get back the complete, non-blank lines they finish (without line endings).

    Only the unfinished tail is buffered, so a line split across any number of TCP reads comes
    out whole and unchanged.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._pending + chunk if self._pending else chunk
        *lines, self._pending = buf.split(b"\n")
        return [stripped for line in lines if (stripped := line.rstrip(b"\r")).strip()]

    def close(self) -> bytes:
        """What is left at end of input: a last line with no newline (possibly cut short)."""
        rest, self._pending = self._pending.strip(), b""
        return rest


def _tool_call(call: Any, position: int) -> ToolCall:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ValueError(f"tool call without a function name: {call!r}")
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):  # tolerate servers that send the OpenAI-style string
        raw = arguments
        arguments = orjson.loads(arguments or "{}")
    else:
        raw = orjson.dumps(arguments).decode()
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call arguments are not an object: {arguments!r}")
    name = function["name"]
    index = function.get("index", position)
    call_id = call.get("id") or "call_" + hashlib.sha256(f"{index}\x00{name}\x00{raw}".encode()).hexdigest()[:24]
    return ToolCall(id=str(call_id), name=name, arguments=arguments, raw_arguments=raw)


def _finish(done_reason: Any, tool_calls: bool) -> FinishReason:
    if tool_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def _usage(data: Mapping[str, Any]) -> Usage:
    prompt = int(data.get("prompt_eval_count") or 0)
    completion = int(data.get("eval_count") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class OllamaProvider(HTTPProvider):
    """A client for one Ollama server. No key is needed; ``api_key`` is sent as a bearer token if given."""

    name = "ollama"
    capabilities = Capabilities(chat=True, stream=True, embeddings=True, tools=True, vision=True, json_output=True)

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str = "ollama",
        keep_alive: str | float | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url=parse_host(base_url) if base_url else base_url_from_env(),
            api_key=api_key,
            headers=headers,
            max_connections=max_connections,
            client=client,
        )
        self.name = name
        self.keep_alive = keep_alive

    @classmethod
    def from_env(cls, name: str = "ollama", environ: Mapping[str, str] = os.environ, **options: Any) -> OllamaProvider:
        """Base URL from ``OLLAMA_BASE_URL`` or ``OLLAMA_HOST``; a bearer key from ``OLLAMA_API_KEY`` if set."""
        options.setdefault("base_url", base_url_from_env(environ))
        options.setdefault("api_key", environ.get("OLLAMA_API_KEY") or None)
        return cls(name=name, **options)

    # ------------------------------------------------------------------ request mapping

    def _unsupported(self, what: str, model: str) -> errors.UnsupportedFeatureError:
        return errors.UnsupportedFeatureError(f"Ollama's /api/chat cannot {what}", provider=self.name, model=model)

    def _image(self, part: ImagePart, model: str) -> str:
        if part.data is not None:
            return part.data
        match = _DATA_URL.fullmatch(part.url or "")
        if match is None:
            raise self._unsupported("fetch image URLs; send the image as base64 data", model)
        return match.group(1)

    def _messages(self, messages: list[Message], model: str) -> list[dict[str, Any]]:
        names: dict[str, str] = {}
        out: list[dict[str, Any]] = []
        for message in messages:
            item: dict[str, Any] = {"role": message.role, "content": message.text}
            if isinstance(message.content, list):
                images = [self._image(p, model) for p in message.content if isinstance(p, ImagePart)]
                if images:
                    item["images"] = images
            if message.tool_calls:
                item["tool_calls"] = [
                    {"function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls
                ]
                names.update((c.id, c.name) for c in message.tool_calls)
            if message.role == "tool":
                tool_name = message.name or names.get(message.tool_call_id or "")
                if tool_name:
                    item["tool_name"] = tool_name
            out.append(item)
        return out

    def payload(self, model: str, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        """The ``/api/chat`` body for ``request``."""
        body: dict[str, Any] = {"model": model, "messages": self._messages(request.messages, model), "stream": stream}
        sampling = (
            ("temperature", request.temperature),
            ("top_p", request.top_p),
            ("num_predict", request.max_tokens),
            ("stop", request.stop or None),
        )
        options = {key: value for key, value in sampling if value is not None}
        if options:
            body["options"] = options
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            body["format"] = fmt.json_schema if fmt.type == "json_schema" else "json"
        choice = request.tool_choice
        if choice == "required" or isinstance(choice, NamedToolChoice):
            raise self._unsupported("force a tool call (tool_choice 'required' or a named tool)", model)
        if request.tools and choice != "none":
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    # ------------------------------------------------------------------ chat

    def _malformed(self, model: str, what: str, *, streaming: bool) -> errors.ProviderError:
        if streaming:
            return errors.StreamInterruptedError(
                f"Ollama sent a line that is not valid: {what}", kind="malformed", provider=self.name, model=model
            )
        return errors.ProviderUnavailableError(
            f"Ollama's answer could not be read: {what}", provider=self.name, model=model
        )

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        data = await self.post_json("/api/chat", self.payload(model, request, stream=False), model, limits)
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            raise self._malformed(model, "no 'message' object", streaming=False)
        try:
            calls = [_tool_call(c, i) for i, c in enumerate(message.get("tool_calls") or [])]
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise self._malformed(model, str(exc), streaming=False) from None
        return ChatResponse(
            message=Message(role="assistant", content=message.get("content") or "", tool_calls=calls or None),
            finish_reason=_finish(data.get("done_reason"), bool(calls)),
            usage=_usage(data),
            provider=self.name,
            model=model,
        )

    def _line(self, line: bytes, model: str) -> dict[str, Any]:
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise self._malformed(model, line[:200].decode("utf-8", "replace"), streaming=True) from None
        if not isinstance(data, dict):
            raise self._malformed(model, "a line is not a JSON object", streaming=True)
        error = data.get("error")
        if error is not None:
            raise errors.StreamInterruptedError(
                "Ollama reported an error mid-stream",
                kind="provider_error",
                provider=self.name,
                model=model,
                provider_message=str(error),
            )
        return data

    def _events(self, data: dict[str, Any], model: str, calls: list[ToolCall]) -> list[ChatStreamEvent]:
        """The events one stream line carries; ``calls`` collects the tool calls seen so far."""
        name = self.name
        events: list[ChatStreamEvent] = []
        message = data.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            if content:
                events.append(ChatStreamEvent("token", delta=content, provider=name, model=model))
            for raw in message.get("tool_calls") or ():
                try:
                    call = _tool_call(raw, len(calls))
                except (ValueError, orjson.JSONDecodeError) as exc:
                    raise self._malformed(model, str(exc), streaming=True) from None
                calls.append(call)
                events.append(ChatStreamEvent("tool_call", tool_call=call, provider=name, model=model))
        if data.get("done") is True:
            usage = _usage(data)
            finish = _finish(data.get("done_reason"), bool(calls))
            events.append(ChatStreamEvent("usage", usage=usage, provider=name, model=model))
            events.append(ChatStreamEvent("end", usage=usage, finish_reason=finish, provider=name, model=model))
        return events

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        payload = self.payload(model, request, stream=True)
        calls: list[ToolCall] = []
        async with self.open_stream("/api/chat", payload, model, limits) as response:
            splitter = NDJSONSplitter()
            async for chunk in self.iter_bytes(response, model):
                for line in splitter.feed(chunk):
                    for event in self._events(self._line(line, model), model, calls):
                        yield event
                        if event.type == "end":
                            return
            rest = splitter.close()
            try:  # a last line without its newline still counts if it is whole
                last = orjson.loads(rest) if rest else None
            except orjson.JSONDecodeError:
                last = None  # cut in the middle: the stream was truncated
            if isinstance(last, dict):
                for event in self._events(self._line(rest, model), model, calls):
                    yield event
                    if event.type == "end":
                        return
        raise errors.StreamInterruptedError(
            "Ollama's stream ended without its 'done' line", kind="truncated", provider=self.name, model=model
        )

    # ------------------------------------------------------------------ embeddings

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        body: dict[str, Any] = {"model": model, "input": inputs}
        if dimensions is not None:
            body["dimensions"] = dimensions
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        data = await self.post_json("/api/embed", body, model, limits)
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
            raise self._malformed(model, "no 'embeddings' list", streaming=False)
        prompt = int(data.get("prompt_eval_count") or 0)
        usage = Usage(prompt_tokens=prompt, total_tokens=prompt)
        return EmbeddingResponse(vectors=vectors, usage=usage, provider=self.name, model=model)
