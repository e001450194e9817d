"""Shared HTTP plumbing for provider clients: one pooled client, JSON calls, SSE streams.

Each provider module subclasses :class:`HTTPProvider` and supplies its URLs, headers and
JSON mapping. What is the same for every HTTP provider lives here once: a lazily created
pooled client, POSTing JSON, opening a stream whose status is checked before any byte is
relayed, and decoding SSE. Error translation lives in :mod:`._errors`, stream-parser helpers
in :mod:`._stream`; both are re-exported here for provider modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager, suppress
from typing import Any

import httpx2
import orjson

from polyroute import errors
from polyroute.providers._errors import error_from_payload, error_from_response, parse_retry_after, transport_error
from polyroute.providers._sse import SSEDecoder, SSEEvent
from polyroute.providers._stream import JSONStreamParser, StreamParser, assistant_reply
from polyroute.providers.base import CallLimits
from polyroute.types import ChatStreamEvent

__all__ = [
    "HTTPProvider",
    "JSONStreamParser",
    "StreamParser",
    "assistant_reply",
    "error_from_payload",
    "error_from_response",
    "parse_retry_after",
    "transport_error",
]


#: how long a finished stream may take to deliver the end of its body before we drop the connection
DRAIN_SECONDS = 0.05


async def _drain(events: AsyncIterator[SSEEvent]) -> None:
    """Consume what is left of a finished stream, briefly; any failure just loses the connection."""
    with suppress(TimeoutError, errors.PolyrouteError, httpx2.HTTPError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in events:
                pass


class HTTPProvider:
    """Base for providers that speak HTTP: owns one lazily created, pooled ``httpx2.AsyncClient``.

    The client is created on first use so that building a router (and importing polyroute)
    opens no sockets and costs nothing for providers that are never called.
    """

    name: str = "http"
    #: env var that must hold the key; ``missing_config`` names it when the key is absent
    api_key_env: str | None = None

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self._extra_headers = dict(headers or {})
        self._max_connections = max_connections
        self._client = client
        self._owns_client = client is None

    def missing_config(self) -> str | None:
        if self.api_key_env and not self.api_key:
            return self.api_key_env
        return None

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying the credential; subclasses override for their scheme."""
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(
                base_url=self.base_url,
                headers={**self._extra_headers, **self.auth_headers()},
                limits=httpx2.Limits(
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_connections,
                    keepalive_expiry=30.0,
                ),
                timeout=httpx2.Timeout(60.0, connect=10.0),
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None

    def _not_configured(self, model: str) -> errors.NotConfiguredError:
        env = self.missing_config()
        return errors.NotConfiguredError(
            f"provider '{self.name}' is not configured: set {env}", env_var=env, provider=self.name, model=model
        )

    def map_error(self, model: str, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        """Map an HTTP error response; providers whose error bodies say more override this."""
        return error_from_response(self.name, model, status, headers, body)

    @staticmethod
    def _timeout(limits: CallLimits) -> httpx2.Timeout:
        return httpx2.Timeout(connect=limits.connect, read=limits.read, write=limits.read, pool=limits.connect)

    async def post_json(self, path: str, payload: Any, model: str, limits: CallLimits) -> Any:
        """POST a JSON body and return the decoded JSON answer, or raise a typed error."""
        if self.missing_config():
            raise self._not_configured(model)
        try:
            response = await self.client.post(
                path,
                content=orjson.dumps(payload),
                headers={"content-type": "application/json"},
                timeout=self._timeout(limits),
            )
        except httpx2.HTTPError as exc:
            raise transport_error(exc, self.name, model) from None
        if response.status_code >= 400:
            raise self.map_error(model, response.status_code, response.headers, response.content)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise errors.ProviderUnavailableError(
                "the provider answered with a body that is not JSON",
                provider=self.name,
                model=model,
                status=response.status_code,
            ) from None

    @asynccontextmanager
    async def open_stream(
        self, path: str, payload: Any, model: str, limits: CallLimits, *, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx2.Response]:
        """POST and yield the streaming response once its status is known to be a success."""
        if self.missing_config():
            raise self._not_configured(model)
        request = self.client.build_request(
            "POST",
            path,
            content=orjson.dumps(payload),
            headers={"content-type": "application/json", "accept": "text/event-stream"},
            params=params,
            timeout=self._timeout(limits),
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise transport_error(exc, self.name, model) from None
        try:
            if response.status_code >= 400:
                try:
                    body = await response.aread()
                except httpx2.HTTPError:
                    body = b""
                raise self.map_error(model, response.status_code, response.headers, body)
            yield response
        finally:
            await response.aclose()

    async def iter_bytes(self, response: httpx2.Response, model: str) -> AsyncIterator[bytes]:
        """The raw body, with transport failures mapped to :class:`StreamInterruptedError`."""
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx2.HTTPError as exc:
            raise transport_error(exc, self.name, model, streaming=True) from None

    async def iter_sse(self, response: httpx2.Response, model: str) -> AsyncGenerator[SSEEvent, None]:
        """The body as whole Server-Sent Events, however its bytes were split across reads.

        Returning normally only means the connection ended; callers check for their own
        provider's finish marker to tell a complete stream from a truncated one.
        """
        decoder = SSEDecoder()
        async for chunk in self.iter_bytes(response, model):
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.close():
            yield event

    async def relay_sse(
        self, path: str, payload: Any, model: str, limits: CallLimits, parser: StreamParser
    ) -> AsyncGenerator[ChatStreamEvent, None]:
        """POST, decode the SSE body, and relay what ``parser`` makes of each event.

        The stream is complete when the parser reports ``done`` (it saw its provider's finish
        marker); a body that ends before that raises ``StreamInterruptedError(truncated)``.
        """
        async with self.open_stream(path, payload, model, limits) as response, aclosing(
            self.iter_sse(response, model)
        ) as events:
            async for sse in events:
                produced = parser.feed(sse)
                if parser.done:
                    # Read the rest of the body (normally just the chunked terminator, already
                    # buffered) before the final events go out: the consumer closes us after
                    # ``end``, and a connection closed mid-body cannot go back to the pool.
                    await _drain(events)
                for event in produced:
                    yield event
                if parser.done:
                    return
        raise errors.StreamInterruptedError(
            "the stream ended before its finish marker", kind="truncated", provider=self.name, model=model
        )
