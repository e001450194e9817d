"""Gemini on Vertex AI: the Gemini wire format, a Google Cloud project URL and an OAuth token.

The request and response bodies of Vertex AI's ``generateContent`` are the Generative Language
API's, so :class:`VertexGeminiProvider` is a :class:`~polyroute.providers.gemini.GeminiProvider`
with three things changed:

- the URL names a project and a location:
  ``https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/
  publishers/google/models/{model}:generateContent`` (location ``global`` has no prefix);
- the credential is an OAuth access token sent as ``Authorization: Bearer``, given directly
  or printed by a command (``gcloud auth print-access-token``). Tokens from a command are
  cached for 50 minutes (Google issues them for 60) and dropped at once when Vertex answers
  401, so an expired token costs one failed call, not fifty minutes of them;
- embeddings use the ``:predict`` method of the text-embedding models
  (``{"instances": [{"content"}]}`` in, ``predictions[].embeddings.values`` out).

The token is attached per request by an ``httpx2.Auth`` flow rather than baked into the pooled
client's headers, because it changes while the client lives.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import httpx2

from polyroute import errors
from polyroute.providers.base import CallLimits
from polyroute.providers.gemini import GeminiProvider
from polyroute.types import EmbeddingResponse, Usage

__all__ = ["TOKEN_LIFETIME", "TokenSource", "VertexGeminiProvider", "vertex_base_url"]

#: how long a token printed by ``token_command`` is reused (Google's access tokens last an hour)
TOKEN_LIFETIME = 50 * 60.0
_COMMAND_TIMEOUT = 60.0
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
_LOCATION = re.compile(r"[a-z0-9-]+")


def vertex_base_url(location: str) -> str:
    """The regional API host for ``location`` (``global`` is served by the unprefixed host)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


class TokenSource:
    """An OAuth access token: a fixed one, or one printed by a command and cached.

    Concurrent callers that find no valid token wait for one run of the command instead of
    each starting their own.
    """

    def __init__(
        self,
        access_token: str | None = None,
        command: str | Sequence[str] | None = None,
        *,
        lifetime: float = TOKEN_LIFETIME,
    ) -> None:
        self._fixed = access_token or None
        self._command = shlex.split(command) if isinstance(command, str) else list(command or ())
        self._lifetime = lifetime
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._fixed or self._command)

    def invalidate(self) -> None:
        """Forget a cached token (the server said it is no longer valid)."""
        self._token = None

    async def get(self) -> str:
        if self._fixed:
            return self._fixed
        if self._token and time.monotonic() < self._expires:
            return self._token
        async with self._lock:
            if not (self._token and time.monotonic() < self._expires):
                self._token = await self._run()
                self._expires = time.monotonic() + self._lifetime
            return self._token

    async def _run(self) -> str:
        if not self._command:
            raise errors.NotConfiguredError("no access token and no token command", env_var="VERTEX_ACCESS_TOKEN")
        program = self._command[0]
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise errors.AuthenticationError(f"cannot run the token command {program!r}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), _COMMAND_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise errors.AuthenticationError(f"the token command {program!r} did not finish") from None
        token = out.decode("utf-8", "replace").strip()
        if proc.returncode != 0 or not token or len(token.split()) != 1:
            # stderr explains the failure (not logged in, ...); stdout might hold a secret, so is not shown
            why = err.decode("utf-8", "replace").strip()[:300] or f"exit status {proc.returncode}"
            raise errors.AuthenticationError(f"the token command {program!r} failed", provider_message=why)
        return token


class _BearerAuth(httpx2.Auth):
    def __init__(self, tokens: TokenSource, provider: str) -> None:
        self._tokens = tokens
        self._provider = provider

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        try:
            token = await self._tokens.get()
        except errors.PolyrouteError as exc:
            exc.provider = self._provider
            exc.model = request.url.path.rpartition("/models/")[2].partition(":")[0] or None
            raise
        request.headers["authorization"] = f"Bearer {token}"
        yield request


class VertexGeminiProvider(GeminiProvider):
    """Gemini models served by Vertex AI in one Google Cloud project and location."""

    name = "vertex"

    def __init__(
        self,
        project: str | None = None,
        location: str | None = None,
        *,
        access_token: str | None = None,
        token_command: str | Sequence[str] | None = None,
        base_url: str | None = None,
        name: str = "vertex",
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
    ) -> None:
        self.project = project or None
        self.location = location or "us-central1"
        if not _LOCATION.fullmatch(self.location):
            raise errors.ConfigError(f"{self.location!r} is not a Vertex AI location")
        super().__init__(
            base_url=base_url or vertex_base_url(self.location),
            name=name,
            api_version="v1",
            headers=headers,
            max_connections=max_connections,
        )
        self.tokens = TokenSource(access_token, token_command)
        self.api_key_env = None  # type: ignore[assignment]  # no API key: a project and a token

    @classmethod
    def from_env(
        cls, name: str = "vertex", environ: Mapping[str, str] = os.environ, **options: Any
    ) -> VertexGeminiProvider:
        """Read ``VERTEX_PROJECT`` / ``GOOGLE_CLOUD_PROJECT``, ``VERTEX_LOCATION`` /
        ``GOOGLE_CLOUD_LOCATION``, ``VERTEX_ACCESS_TOKEN``, ``VERTEX_TOKEN_COMMAND`` and
        ``VERTEX_BASE_URL``; ``options`` (constructor arguments, e.g. from config) win."""
        options.setdefault("project", environ.get("VERTEX_PROJECT") or environ.get("GOOGLE_CLOUD_PROJECT"))
        options.setdefault("location", environ.get("VERTEX_LOCATION") or environ.get("GOOGLE_CLOUD_LOCATION"))
        options.setdefault("access_token", environ.get("VERTEX_ACCESS_TOKEN"))
        options.setdefault("token_command", environ.get("VERTEX_TOKEN_COMMAND"))
        options.setdefault("base_url", environ.get("VERTEX_BASE_URL"))
        return cls(name=name, **options)

    def missing_config(self) -> str | None:
        if not self.project:
            return "VERTEX_PROJECT"
        if not self.tokens.configured:
            return "VERTEX_ACCESS_TOKEN"
        return None

    def auth_headers(self) -> dict[str, str]:
        return {}  # the token is added per request by _BearerAuth

    @property
    def client(self) -> httpx2.AsyncClient:
        fresh = self._client is None
        client = super().client
        if fresh:
            client.auth = _BearerAuth(self.tokens, self.name)
        return client

    def map_error(self, model: str, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        exc = super().map_error(model, status, headers, body)
        if isinstance(exc, errors.AuthenticationError):
            self.tokens.invalidate()
            exc.message = "the provider rejected the access token"
        return exc

    def _resource(self, model: str) -> str:
        model = model.strip()
        if not _MODEL_ID.fullmatch(model):
            raise errors.ModelNotFoundError(f"{model!r} is not a Vertex AI model id", provider=self.name, model=model)
        return f"projects/{self.project}/locations/{self.location}/publishers/google/models/{model}"

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        body: dict[str, Any] = {"instances": [{"content": text} for text in inputs]}
        if dimensions is not None:
            body["parameters"] = {"outputDimensionality": dimensions}
        data = await self.post_json(f"/{self._resource(model)}:predict", body, model, limits)
        predictions = data.get("predictions") if isinstance(data, dict) else None
        vectors: list[list[float]] = []
        tokens = 0
        for item in predictions if isinstance(predictions, list) else ():
            found = item.get("embeddings") if isinstance(item, dict) else None
            values = found.get("values") if isinstance(found, dict) else None
            if isinstance(values, list):
                vectors.append(values)
                stats = found.get("statistics") if isinstance(found, dict) else None
                count = stats.get("token_count") if isinstance(stats, dict) else None
                tokens += int(count) if isinstance(count, (int, float)) else 0
        if len(vectors) != len(inputs):
            raise errors.ProviderUnavailableError(
                f"asked for {len(inputs)} embeddings, got {len(vectors)}", provider=self.name, model=model
            )
        usage = Usage.model_construct(
            prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens, cached_tokens=0, reasoning_tokens=0
        )
        return EmbeddingResponse.model_construct(
            vectors=vectors, usage=usage, provider=self.name, model=model, latency=0.0, attempts=[]
        )
