"""AWS Bedrock's Converse API: one request shape for every model Bedrock hosts.

``POST /model/{modelId}/converse`` answers with one JSON object; ``/converse-stream`` answers
with AWS's binary ``application/vnd.amazon.eventstream`` framing, decoded (CRC-checked) by
botocore's :class:`~botocore.eventstream.EventStreamBuffer`. Requests are signed with SigV4
through botocore's signer, so botocore is an extra (``pip install 'polyroute[bedrock]'``);
a Bedrock API key (``AWS_BEARER_TOKEN_BEDROCK``) is sent as a Bearer token instead.

Choices made where the formats differ:

- System messages become ``system`` blocks; tool results are ``toolResult`` blocks of a user
  turn (placed before its text, as tool-using models require); consecutive turns of one
  role are merged because Converse wants the roles to alternate. Images must be bytes (base64
  or a ``data:`` URL) or ``s3://`` locations: Converse does not fetch web URLs, so those are
  refused with :class:`~polyroute.errors.UnsupportedFeatureError`.
- ``tool_choice``: auto -> ``auto``, required -> ``any``, a name -> ``tool``; Converse has no
  "none", so it is refused rather than silently ignored.
- Structured output has no Converse field either, so it is a *forced tool* (as for Anthropic):
  a tool named after the response format whose ``inputSchema`` is the schema; its input comes
  back as the reply text with finish reason ``stop``.
- ``temperature`` is clamped to 1.0, the top of the range every Bedrock model family accepts.
- Usage: ``prompt_tokens`` counts every input token (``inputTokens`` plus cache reads and
  writes) and ``cached_tokens`` the cache reads, as for the other providers.
- A stream is complete after ``messageStop``; the ``metadata`` event that follows it carries
  the usage. An exception frame (``throttlingException``, ...) raises its typed error.
- Bedrock has no embeddings in Converse; :meth:`BedrockProvider.embed` says so.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx2
import orjson

from polyroute import errors
from polyroute.providers._converse import ConverseStream, bedrock_error, converse_body, converse_reply
from polyroute.providers._http import HTTPProvider
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.types import ChatRequest, ChatResponse, ChatStreamEvent, EmbeddingResponse

__all__ = ["BEDROCK_CAPABILITIES", "BedrockProvider", "default_base_url"]

BEDROCK_CAPABILITIES = Capabilities(chat=True, stream=True, embeddings=False, tools=True, vision=True, json_output=True)
_INSTALL_HINT = "botocore (pip install 'polyroute[bedrock]')"


def default_base_url(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"


# --------------------------------------------------------------------------- signing


class _SigV4(httpx2.Auth):
    """Signs each request with SigV4 (service ``bedrock``) over the exact bytes httpx2 sends."""

    requires_request_body = True

    def __init__(self, provider: BedrockProvider) -> None:
        self._provider = provider

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import RefreshableCredentials

        credentials = self._provider.credentials()
        if credentials is None:
            raise errors.NotConfiguredError(
                "no AWS credentials", env_var="AWS_ACCESS_KEY_ID", provider=self._provider.name
            )
        aws = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={"content-type": request.headers["content-type"]},
        )
        if isinstance(credentials, RefreshableCredentials):  # a refresh may call STS or read files
            frozen = await asyncio.to_thread(credentials.get_frozen_credentials)
        else:
            frozen = credentials.get_frozen_credentials()
        SigV4Auth(frozen, "bedrock", self._provider.region).add_auth(aws)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]
        yield request


# --------------------------------------------------------------------------- provider


class BedrockProvider(HTTPProvider):
    """Models on AWS Bedrock through the Converse API; see the module docstring for the mapping."""

    name = "bedrock"
    api_key_env = None
    capabilities = BEDROCK_CAPABILITIES

    def __init__(
        self,
        region: str | None = None,
        *,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        credential_chain: bool = True,
        name: str = "bedrock",
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        self._access = (
            aws_access_key_id or env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key or env.get("AWS_SECRET_ACCESS_KEY"),
        )
        self._token = aws_session_token or env.get("AWS_SESSION_TOKEN")
        self._chain = credential_chain
        self._credentials: Any = None
        self._resolved = False
        bearer = api_key or env.get("AWS_BEARER_TOKEN_BEDROCK")
        base = base_url or env.get("BEDROCK_BASE_URL") or default_base_url(self.region or "<region>")
        super().__init__(base_url=base, api_key=bearer, headers=headers, max_connections=max_connections)
        self.name = name

    @classmethod
    def from_env(
        cls, name: str = "bedrock", environ: Mapping[str, str] = os.environ, **options: Any
    ) -> BedrockProvider:
        """Read the region, the ``AWS_*`` keys, ``AWS_BEARER_TOKEN_BEDROCK`` and ``BEDROCK_BASE_URL``."""
        return cls(name=name, environ=environ, **options)

    def credentials(self) -> Any:
        """botocore credentials: the given keys, else (once) botocore's credential chain; None if none.

        The chain reads ``AWS_*`` variables, the shared config and credentials files, SSO and
        container or instance metadata, as the AWS SDKs do; pass ``credential_chain=False`` to
        use only explicit keys (and never touch the files or the metadata endpoint).
        """
        if not self._resolved:
            from botocore.credentials import Credentials

            key, secret = self._access
            if key and secret:
                self._credentials = Credentials(key, secret, self._token)
            elif self._chain:
                import botocore.session

                self._credentials = botocore.session.get_session().get_credentials()
            self._resolved = True
        return self._credentials

    def missing_config(self) -> str | None:
        if not self.region:
            return "AWS_REGION"
        if self.api_key:
            return None
        try:
            import botocore  # noqa: F401
        except ImportError:
            return _INSTALL_HINT
        return None if self.credentials() is not None else "AWS_ACCESS_KEY_ID"

    @property
    def client(self) -> httpx2.AsyncClient:
        fresh = self._client is None
        client = super().client
        if fresh and not self.api_key:
            client.auth = _SigV4(self)
        return client

    def map_error(self, model: str, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        return bedrock_error(self.name, model, status, headers.get("x-amzn-errortype") or "", body, headers=headers)

    def _path(self, model: str, op: str) -> str:
        if not model.strip():
            raise errors.ModelNotFoundError("empty Bedrock model id", provider=self.name, model=model)
        return f"/model/{quote(model.strip(), safe='')}/{op}"

    def _body(self, model: str, request: ChatRequest) -> tuple[dict[str, Any], str | None]:
        try:
            return converse_body(request)
        except errors.ProviderError as exc:
            exc.provider, exc.model = self.name, model
            raise

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        body, format_tool = self._body(model, request)
        data = await self.post_json(self._path(model, "converse"), body, model, limits)
        return converse_reply(data, self.name, model, format_tool)

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        from botocore.eventstream import EventStreamBuffer, ParserError

        body, format_tool = self._body(model, request)
        parser = ConverseStream(self.name, model, format_tool)
        frames = EventStreamBuffer()
        async with self.open_stream(self._path(model, "converse-stream"), body, model, limits) as response:
            async for piece in self.iter_bytes(response, model):
                frames.add_data(piece)
                try:
                    messages = list(frames)
                except ParserError as exc:
                    raise parser.malformed(f"a frame is corrupt ({type(exc).__name__})") from None
                for message in messages:
                    for event in self._event(parser, message.headers, message.payload, model):
                        yield event
                if parser.complete:  # metadata, the last event, has arrived
                    break
        if parser.stop_reason is None:
            raise errors.StreamInterruptedError(
                "the stream ended before messageStop", kind="truncated", provider=self.name, model=model
            )
        for event in parser.end():
            yield event

    def _event(
        self, parser: ConverseStream, headers: Mapping[str, Any], payload: bytes, model: str
    ) -> list[ChatStreamEvent]:
        kind = headers.get(":message-type")
        if kind == "exception":
            raise bedrock_error(self.name, model, None, str(headers.get(":exception-type") or ""), payload)
        if kind == "error":
            message = str(headers.get(":error-message") or headers.get(":error-code") or "stream error")
            raise errors.StreamInterruptedError(
                "the provider reported an error mid-stream",
                kind="provider_error",
                provider=self.name,
                model=model,
                provider_message=message,
            )
        try:
            data = orjson.loads(payload)
            if type(data) is not dict:
                raise TypeError
            return parser.handle(str(headers.get(":event-type") or ""), data)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise parser.malformed(
                f"a {headers.get(':event-type')!r} event does not have the documented shape"
            ) from None

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        raise errors.UnsupportedFeatureError(
            "Bedrock Converse has no embeddings; use a provider with an embeddings endpoint",
            provider=self.name,
            model=model,
        )
