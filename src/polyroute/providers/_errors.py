"""Turning what providers send back on failure into :mod:`polyroute.errors` classes.

Every HTTP provider needs the same translations: a status code plus an error body into a
typed error, the many spellings of "retry after" into seconds, an httpx2 transport failure
into an unavailable/timeout/interrupted error, and an error object inside a 200 stream into
the error its type names. They live here once so every wire format maps alike.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import httpx2
import orjson

from polyroute import errors

__all__ = ["error_from_payload", "error_from_response", "parse_retry_after", "transport_error"]

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")

_CONTEXT_LENGTH_HINTS = (
    "context_length_exceeded",
    "context length",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "input is too long",
    "exceeds the context window",
    "token limit",
)


def _parse_duration(value: str) -> float | None:
    """Parse ``"1s"``, ``"6m0s"``, ``"250ms"``, ``"1.5"`` (seconds) into seconds."""
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the provider asks us to wait, from any header that says so, or None.

    Reads ``retry-after-ms``, ``Retry-After`` (delta-seconds or an HTTP date) and the
    rate-limit reset headers (``x-ratelimit-reset-requests`` / ``-tokens`` as OpenAI and Groq
    send them, ``anthropic-ratelimit-*-reset`` as an RFC 3339 time). The longest wait wins,
    because every limit named must have reset before a retry can succeed.
    """
    waits: list[float] = []
    ms = headers.get("retry-after-ms")
    if ms:
        with suppress(ValueError):
            waits.append(max(0.0, float(ms) / 1000))
    ra = headers.get("retry-after")
    if ra:
        seconds = _parse_duration(ra)
        if seconds is None:
            try:
                when = email.utils.parsedate_to_datetime(ra)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                seconds = max(0.0, when.timestamp() - (now if now is not None else time.time()))
        if seconds is not None:
            waits.append(seconds)
    if not waits:
        # Reset headers describe when a window refills; only consult them when nothing
        # explicit was said (they are also present on successful responses).
        for key in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens", "x-ratelimit-reset"):
            value = headers.get(key)
            if value:
                seconds = _parse_duration(value)
                if seconds is not None:
                    waits.append(seconds)
        # Anthropic sends an RFC 3339 reset time per limit; a limit with quota left is not
        # what we are waiting for, so only exhausted (or unstated) ones count.
        for key in _ANTHROPIC_RESET_HEADERS:
            value = headers.get(key)
            if value and headers.get(key[:-5] + "remaining", "0").strip() in ("0", ""):
                seconds = _seconds_until_rfc3339(value, now)
                if seconds is not None:
                    waits.append(seconds)
    return max(waits) if waits else None


_ANTHROPIC_RESET_HEADERS = (
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-reset",
)


def _seconds_until_rfc3339(value: str, now: float | None) -> float | None:
    """Seconds from ``now`` until an RFC 3339 time such as ``2024-05-01T12:00:05Z`` (None if unreadable)."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def _provider_message(body: bytes) -> tuple[str, str]:
    """(message, code/type) out of the usual error-body shapes, or the raw text."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip(), ""
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = str(err.get("message") or err.get("detail") or data.get("message") or "")
            code = str(err.get("code") or err.get("type") or err.get("status") or "")
            return message, code
        if isinstance(err, str):
            return err, str(data.get("type") or "")
        return str(data.get("message") or data.get("detail") or ""), ""
    return str(data or ""), ""


def error_from_response(
    provider: str,
    model: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
) -> errors.ProviderError:
    """Map an HTTP error response to the matching typed error."""
    message, code = _provider_message(body)
    text = f"{message} {code}".lower()
    kw: dict[str, Any] = {"provider": provider, "model": model, "status": status, "provider_message": message or None}
    if status == 429:
        return errors.RateLimitedError("rate limited by the provider", retry_after=parse_retry_after(headers), **kw)
    if status in (401,):
        return errors.AuthenticationError("the provider rejected the API key", **kw)
    if status == 403:
        return errors.PermissionDeniedError("the key may not use this model or endpoint", **kw)
    if status == 404:
        return errors.ModelNotFoundError("model or endpoint not found", **kw)
    if status in (408, 504):
        return errors.TimeoutError("the provider timed out", kind="total", **kw)
    if status in (400, 413, 422):
        if any(hint in text for hint in _CONTEXT_LENGTH_HINTS):
            return errors.ContextLengthExceededError("the input is longer than the model's context window", **kw)
        if "content_filter" in text or "content management policy" in text or "safety" in code.lower():
            return errors.ContentFilteredError("the provider's content filter rejected the request", **kw)
        return errors.BadRequestError("the provider rejected the request", **kw)
    if status >= 500:
        return errors.ProviderUnavailableError(
            "the provider is unavailable", retry_after=parse_retry_after(headers), **kw
        )
    return errors.BadRequestError(f"unexpected HTTP status {status}", **kw)


def transport_error(
    exc: httpx2.HTTPError, provider: str, model: str, *, streaming: bool = False
) -> errors.ProviderError:
    """Map an httpx2 transport failure to a typed error (never leaks the request URL's secrets)."""
    kw: dict[str, Any] = {"provider": provider, "model": model}
    if isinstance(exc, httpx2.ConnectTimeout):
        return errors.TimeoutError("timed out connecting to the provider", kind="connect", **kw)
    if isinstance(exc, httpx2.PoolTimeout):
        return errors.TimeoutError("timed out waiting for a pooled connection", kind="queue", **kw)
    if isinstance(exc, (httpx2.ReadTimeout, httpx2.WriteTimeout)):
        return errors.TimeoutError("the provider stopped sending data", kind="idle", **kw)
    if isinstance(exc, httpx2.ConnectError):
        return errors.ProviderUnavailableError(f"cannot connect to the provider: {type(exc).__name__}", **kw)
    if streaming:
        return errors.StreamInterruptedError(
            f"the connection dropped mid-stream: {type(exc).__name__}", kind="disconnect", **kw
        )
    return errors.ProviderUnavailableError(f"connection to the provider failed: {type(exc).__name__}", **kw)


#: words in an in-band error's ``type``/``code`` and the HTTP status each stands for
_IN_BAND_STATUS = (
    ("context_length", 400),
    ("rate_limit", 429),
    ("quota", 429),
    ("overloaded", 503),
    ("unavailable", 503),
    ("server_error", 500),
    ("internal", 500),
    ("timeout", 504),
    ("api_key", 401),
    ("authentication", 401),
    ("permission", 403),
    ("not_found", 404),
    ("invalid_request", 400),
    ("content_filter", 400),
)


def error_from_payload(
    provider: str, model: str, payload: Mapping[str, Any], *, streaming: bool = False
) -> errors.ProviderError:
    """Map an error object that arrived inside a successful (HTTP 200) response.

    Streams report failures mid-way as a data event such as ``{"error": {"message", "type",
    "code"}}`` (OpenAI, OpenRouter, SGLang) or ``{"object": "error", "message", "type", "code":
    400}`` (vLLM): the HTTP status was sent long before. A numeric ``code`` is taken as the
    status, else words in ``type``/``code`` pick one, and the body is then mapped exactly as
    :func:`error_from_response` maps it. The error's ``status`` is that numeric code or None,
    never a guess. An error naming no recognisable cause becomes
    :class:`~polyroute.errors.StreamInterruptedError` (``provider_error``) when streaming, else
    :class:`~polyroute.errors.ProviderUnavailableError`.
    """
    err = payload.get("error", payload)
    if not isinstance(err, Mapping):
        err = {"message": str(err)}
    code = err.get("code")
    explicit = code if type(code) is int and 400 <= code < 600 else None
    status = explicit
    if status is None:
        words = f"{err.get('type') or ''} {code or ''}".lower()
        status = next((value for word, value in _IN_BAND_STATUS if word in words), None)
    body = orjson.dumps({"error": dict(err)}, default=str)
    if status is None:
        message = _provider_message(body)[0] or None
        if streaming:
            return errors.StreamInterruptedError(
                "the provider reported an error mid-stream",
                kind="provider_error",
                provider=provider,
                model=model,
                provider_message=message,
            )
        return errors.ProviderUnavailableError(
            "the provider reported an error", provider=provider, model=model, provider_message=message
        )
    exc = error_from_response(provider, model, status, {}, body)
    exc.status = explicit
    return exc
