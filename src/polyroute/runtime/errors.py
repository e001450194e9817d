"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Routes raise :class:`ApiError` (or let a :mod:`polyroute.errors` / storage error through);
the handlers here turn each into the right status. Upstream failures map by the class of
the error that ended the call: a timeout is a 504, a provider that is down or not configured
is a 503, a rate limit (the provider's or our own concurrency limit) is a 429 with
``Retry-After``, anything else upstream is a 502. The attempt list always goes in
``details``.

:class:`CatchAllMiddleware` is the last line: an unexpected exception becomes a 500 with an
error id and a one-line log entry. Neither ever contains a traceback or an exception message
(which could quote a credential); tracebacks are logged only with ``debug`` on. Every error
body also passes through the :class:`Redactor`, which blanks any configured secret.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polyroute import errors
from polyroute.runtime.routing_headers import attempts_header
from polyroute.storage import SessionBusyError, SessionGoneError, StorageBusyError, StorageError

__all__ = [
    "ApiError",
    "CatchAllMiddleware",
    "Redactor",
    "api_error_from",
    "error_body",
    "exception_handlers",
]

logger = logging.getLogger("polyroute.runtime")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


class ApiError(Exception):
    """An error response: status, stable code, human message, JSON details, extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


class Redactor:
    """Replaces known secrets (our API keys, providers' keys) in outgoing error bytes."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._secrets = sorted({s.encode() for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, data: bytes) -> bytes:
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, b"[redacted]")
        return data


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))} if seconds is not None else {}


def _upstream_status(err: errors.PolyrouteError | None) -> tuple[int, dict[str, str]]:
    if isinstance(err, errors.CapacityError):
        return 429, _retry_after(1.0)
    if isinstance(err, errors.RateLimitedError):
        return 429, _retry_after(err.retry_after if err.retry_after is not None else 1.0)
    if isinstance(err, errors.TimeoutError):
        return 504, {}
    if isinstance(err, errors.ProviderUnavailableError):
        return 503, _retry_after(err.retry_after)
    if isinstance(err, errors.NotConfiguredError):
        return 503, {}
    if isinstance(err, errors.BadRequestError | errors.ContentFilteredError):
        return 400, {}
    if isinstance(err, errors.ConfigError):
        return 422, {}
    return 502, {}


def _describe(err: errors.PolyrouteError) -> dict[str, Any]:
    return {"code": err.code, "message": err.message, **err.details()}


def api_error_from(exc: errors.PolyrouteError) -> ApiError:
    """The HTTP error for a failed router call, with the attempt list in ``details``."""
    attempts = [a.to_dict() for a in exc.attempts]
    if isinstance(exc, errors.AllCandidatesFailedError):
        last = exc.last_error
        status, headers = _upstream_status(last)
        if last is None and exc.attempts and all(a.outcome == "skipped" for a in exc.attempts):
            status = 503  # nothing could be called at all (circuits open, limits): unavailable, not broken
        details: dict[str, Any] = {"attempts": attempts}
        if last is not None:
            details["lastError"] = _describe(last)
        message = (
            f"every candidate model failed; the last error was: {last.message}"
            if last is not None
            else "every candidate model failed"
        )
        return ApiError(status, exc.code, message, details, {**headers, **_routing(exc)})
    status, headers = _upstream_status(exc)
    details = {**exc.details(), "attempts": attempts}
    return ApiError(status, exc.code, exc.message, details, {**headers, **_routing(exc)})


def _routing(exc: errors.PolyrouteError) -> dict[str, str]:
    """The attempts header of a failed call (no provider answered)."""
    if not exc.attempts:
        return {}
    return {"x-polyroute-attempts": attempts_header(exc.attempts)}


def storage_api_error(exc: StorageError) -> ApiError:
    if isinstance(exc, SessionBusyError):
        return ApiError(409, exc.code, str(exc), {}, _retry_after(exc.retry_after))
    if isinstance(exc, SessionGoneError):
        return ApiError(409, exc.code, str(exc))
    if isinstance(exc, StorageBusyError):
        return ApiError(429, exc.code, str(exc), {}, _retry_after(exc.retry_after))
    return ApiError(500, exc.code, "a storage error occurred")


def render_error(request_or_scope: Request | Scope, error: ApiError) -> Response:
    scope = request_or_scope.scope if isinstance(request_or_scope, Request) else request_or_scope
    app = scope.get("app")
    redact: Redactor | None = getattr(getattr(app, "state", None), "redactor", None)
    content = orjson.dumps(error.body())
    if redact is not None:
        content = redact(content)
    return Response(content, status_code=error.status, headers=error.headers, media_type="application/json")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return render_error(request, exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if exc.detail and isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return render_error(request, ApiError(exc.status_code, code, message, {}, dict(exc.headers or {})))


async def _polyroute_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.PolyrouteError)
    return render_error(request, api_error_from(exc))


async def _storage_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageError)
    return render_error(request, storage_api_error(exc))


def exception_handlers() -> dict[Any, Any]:
    return {
        ApiError: _api_error,
        HTTPException: _http_exception,
        errors.PolyrouteError: _polyroute_error,
        StorageError: _storage_error,
    }


class CatchAllMiddleware:
    """Turns any exception that escaped the handlers into a bare 500 (or 503 for a busy pool)."""

    def __init__(self, app: ASGIApp, *, debug: bool = False) -> None:
        self.app = app
        self.debug = debug

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            error_id = uuid.uuid4().hex[:12]
            logger.error(
                "unhandled %s in %s %s (error id %s)",
                type(exc).__name__,
                scope.get("method"),
                scope.get("path"),
                error_id,
                exc_info=exc if self.debug else None,
            )
            if started:
                return  # the response is under way; closing the connection is all that is left
            if isinstance(exc, sa_exc.TimeoutError):
                error = ApiError(
                    503, "database_busy", "no database connection became free in time", {}, _retry_after(1.0)
                )
            else:
                error = ApiError(500, "internal_error", "internal server error", {"errorId": error_id})
            await render_error(scope, error)(scope, receive, send)
