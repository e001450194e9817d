"""Azure OpenAI: the OpenAI wire format at deployment URLs, with Azure's key and filters.

Bodies, replies and streams are OpenAI's, so :class:`AzureOpenAIProvider` is an
:class:`~polyroute.providers.openai.OpenAIProvider` that changes only what Azure changes:

- the URL names a *deployment*, not a model, and carries the API version:
  ``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21``
  (and ``.../embeddings``). In ``azure:<name>`` the model id is the deployment name;
- the credential is an ``api-key`` header, or a Microsoft Entra ID token sent as
  ``Authorization: Bearer`` (``azure_ad_token``);
- Azure's content filters: a prompt rejected by them is an HTTP 400 with code
  ``content_filter`` and the categories in ``innererror.content_filter_result``; a reply
  withheld by them ends with ``finish_reason: "content_filter"``. Both become
  :class:`~polyroute.errors.ContentFilteredError` (the reply only when nothing else was said),
  and the message names the categories that tripped;
- streams open with a chunk that has empty ``choices`` and only ``prompt_filter_results``;
  the OpenAI stream parser already skips a chunk without choices.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx2
import orjson

from polyroute import errors
from polyroute.providers._openai_wire import MaxTokensParam
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.providers.openai import OpenAIProvider

__all__ = ["AZURE_CAPABILITIES", "DEFAULT_API_VERSION", "AzureOpenAIProvider", "filtered_categories"]

#: the latest generally available data-plane inference version of the deployments API
DEFAULT_API_VERSION = "2024-10-21"
AZURE_CAPABILITIES = Capabilities(chat=True, stream=True, embeddings=True, tools=True, vision=True, json_output=True)
_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: the base URL while no endpoint is set: shown in docs, never called (missing_config says so)
_NO_ENDPOINT = "https://<resource>.openai.azure.com"


def filtered_categories(body: bytes) -> list[str]:
    """The content-filter categories marked ``filtered`` in an Azure error body, in order."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return []
    err = data.get("error") if isinstance(data, dict) else None
    inner = err.get("innererror") if isinstance(err, dict) else None
    result = inner.get("content_filter_result") if isinstance(inner, dict) else None
    if not isinstance(result, dict):
        return []
    return [name for name, verdict in result.items() if isinstance(verdict, dict) and verdict.get("filtered") is True]


class AzureOpenAIProvider(OpenAIProvider):
    """OpenAI models deployed in an Azure OpenAI (or Azure AI Foundry) resource."""

    name = "azure"
    capabilities = AZURE_CAPABILITIES

    def __init__(
        self,
        api_key: str | None = None,
        endpoint: str | None = None,
        *,
        azure_ad_token: str | None = None,
        api_version: str | None = None,
        name: str = "azure",
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        capabilities: Capabilities | None = None,
        max_tokens_param: MaxTokensParam = "max_tokens",
        stream_usage: bool = True,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("AZURE_OPENAI_API_KEY")
        endpoint = endpoint if endpoint is not None else os.environ.get("AZURE_OPENAI_ENDPOINT", "")
        self.azure_ad_token = azure_ad_token or None
        self.api_version = api_version or os.environ.get("OPENAI_API_VERSION") or DEFAULT_API_VERSION
        super().__init__(
            api_key=api_key,
            base_url=endpoint or _NO_ENDPOINT,
            name=name,
            headers=headers,
            max_connections=max_connections,
            api_key_env="AZURE_OPENAI_API_KEY",
            base_url_env=None,
            capabilities=capabilities or AZURE_CAPABILITIES,
            max_tokens_param=max_tokens_param,
            stream_usage=stream_usage,
        )

    @classmethod
    def from_env(
        cls, name: str = "azure", environ: Mapping[str, str] = os.environ, **options: Any
    ) -> AzureOpenAIProvider:
        """Read the key, Entra token, endpoint and API version from the ``AZURE_OPENAI_*`` variables."""
        return cls(
            api_key=environ.get("AZURE_OPENAI_API_KEY") or "",
            endpoint=environ.get("AZURE_OPENAI_ENDPOINT") or "",
            azure_ad_token=environ.get("AZURE_OPENAI_AD_TOKEN"),
            api_version=environ.get("OPENAI_API_VERSION"),
            name=name,
            **options,
        )

    @property
    def endpoint(self) -> str | None:
        """The resource endpoint, or None when none is configured (config may set ``base_url`` later)."""
        return None if self.base_url == _NO_ENDPOINT else self.base_url

    def missing_config(self) -> str | None:
        if not self.endpoint:
            return "AZURE_OPENAI_ENDPOINT"
        if not self.api_key and not self.azure_ad_token:
            return "AZURE_OPENAI_API_KEY"
        return None

    def auth_headers(self) -> dict[str, str]:
        if self.api_key:
            return {"api-key": self.api_key}
        return {"authorization": f"Bearer {self.azure_ad_token}"} if self.azure_ad_token else {}

    def _path(self, path: str, model: str) -> str:
        """``/chat/completions`` -> ``/openai/deployments/<model>/chat/completions?api-version=...``."""
        if not _DEPLOYMENT.fullmatch(model):
            message = f"{model!r} is not an Azure deployment name"
            raise errors.ModelNotFoundError(message, provider=self.name, model=model)
        return f"/openai/deployments/{model}{path}?api-version={quote(self.api_version, safe='')}"

    async def post_json(self, path: str, payload: Any, model: str, limits: CallLimits) -> Any:
        return await super().post_json(self._path(path, model), payload, model, limits)

    @asynccontextmanager
    async def open_stream(
        self, path: str, payload: Any, model: str, limits: CallLimits, *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx2.Response]:
        async with super().open_stream(self._path(path, model), payload, model, limits, params=params) as response:
            yield response

    def map_error(self, model: str, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        exc = super().map_error(model, status, headers, body)
        if isinstance(exc, errors.ContentFilteredError):
            categories = filtered_categories(body)
            if categories:
                exc.message = f"{exc.message} ({', '.join(categories)})"
        return exc
