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

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from polyroute import errors
from polyroute.providers._http import HTTPProvider, error_from_payload
from polyroute.providers._openai_wire import (
    MaxTokensParam,
    StreamState,
    Unreadable,
    chat_body,
    chat_response,
    usage_from,
    vectors,
)
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.types import ChatRequest, ChatResponse, ChatStreamEvent, EmbeddingResponse

__all__ = ["DEFAULT_BASE_URL", "OPENAI_CAPABILITIES", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
OPENAI_CAPABILITIES = Capabilities(chat=True, stream=True, embeddings=True, tools=True, vision=True, json_output=True)


class OpenAIProvider(HTTPProvider):
    """A client for the OpenAI API or any server that speaks its chat/embeddings format.

    The key defaults to the ``api_key_env`` variable and the base URL to ``base_url_env``
    (as the official SDK does); :meth:`from_env` reads an explicit mapping instead. Local
    servers need no key: pass ``require_key=False``. ``max_tokens_param`` names the field
    that carries ``max_tokens`` (newer OpenAI models want ``"max_completion_tokens"``;
    compatible servers mostly know only ``"max_tokens"``). ``stream_usage=False`` leaves out
    ``stream_options`` for servers that reject it (Mistral answers 422).
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
        max_tokens_param: MaxTokensParam = "max_tokens",
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
        """Read ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (or ``OPENAI_ENDPOINT``) and ``OPENAI_ORG_ID``.

        ``options`` are constructor keywords and win over the environment (``api_key`` and
        ``base_url`` included), which is how explicit config values take precedence.
        """
        options.setdefault("organization", environ.get("OPENAI_ORG_ID") or None)
        options.setdefault("api_key", environ.get("OPENAI_API_KEY") or "")
        options.setdefault(
            "base_url", environ.get("OPENAI_BASE_URL") or environ.get("OPENAI_ENDPOINT") or DEFAULT_BASE_URL
        )
        return cls(name=name, **options)

    @classmethod
    def preset(cls, name: str, /, **overrides: Any) -> OpenAIProvider:
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

    def chat_body(self, model: str, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body for ``/chat/completions`` as this provider sends it."""
        return chat_body(
            model, request, max_tokens_param=self.max_tokens_param, stream=stream, stream_usage=self.stream_usage
        )

    def _unreadable(self, model: str, exc: Unreadable) -> errors.ProviderUnavailableError:
        message = f"the provider's answer could not be read: {exc}"
        return errors.ProviderUnavailableError(message, provider=self.name, model=model)

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        try:
            data = await self.post_json("/chat/completions", self.chat_body(model, request), model, limits)
            return chat_response(data, self.name, model)
        except Unreadable as exc:
            raise self._unreadable(model, exc) from None
        except errors.PolyrouteError as exc:
            raise self._redact(exc) from None

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        """Relay ``choices[0].delta.content`` byte for byte; see the module docstring for the rest."""
        payload = self.chat_body(model, request, stream=True)
        try:
            parser = StreamState(self.name, model)
            async with aclosing(self.relay_sse("/chat/completions", payload, model, limits, parser)) as events:
                async for event in events:
                    yield event
        except Unreadable as exc:
            message = f"the provider's stream could not be read: {exc}"
            raise errors.StreamInterruptedError(message, kind="malformed", provider=self.name, model=model) from None
        except errors.PolyrouteError as exc:
            raise self._redact(exc) from None

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        body: dict[str, Any] = {"model": model, "input": inputs, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        try:
            data = await self.post_json("/embeddings", body, model, limits)
            if isinstance(data, dict) and ("error" in data or data.get("object") == "error"):
                raise error_from_payload(self.name, model, data)
            found = vectors(data, len(inputs))
        except Unreadable as exc:
            raise self._unreadable(model, exc) from None
        except errors.PolyrouteError as exc:
            raise self._redact(exc) from None
        return EmbeddingResponse.model_construct(
            vectors=found,
            usage=usage_from(data.get("usage")),
            provider=self.name,
            model=model,
            latency=0.0,
            attempts=[],
        )
