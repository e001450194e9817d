"""One typed error hierarchy for every provider.

Provider modules translate their wire errors into these classes; the router decides what
to do from the class and the ``retryable`` flag alone, never from a status code or a
provider's message. Every error carries where it happened (provider, model), the HTTP
status when there was one, and the provider's own message for humans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from polyroute.types import Attempt

__all__ = [
    "AllCandidatesFailedError",
    "AuthenticationError",
    "BadRequestError",
    "CapacityError",
    "ConfigError",
    "ContentFilteredError",
    "ContextLengthExceededError",
    "ModelNotFoundError",
    "NotConfiguredError",
    "PermissionDeniedError",
    "PolyrouteError",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "StreamInterruptedError",
    "StructuredOutputError",
    "TimeoutError",
    "UnsupportedFeatureError",
]

TimeoutKind = Literal["connect", "first_token", "idle", "total", "queue"]
InterruptKind = Literal["disconnect", "truncated", "malformed", "provider_error"]


class PolyrouteError(Exception):
    """Base of every error polyroute raises."""

    #: a stable machine-readable code, used in HTTP error bodies
    code: str = "polyroute_error"
    #: whether the same call might succeed if tried again on the same candidate
    retryable: bool = False
    #: whether another candidate might succeed; false for errors caused by the request itself
    fallback: bool = True

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status: int | None = None,
        provider_message: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.provider_message = provider_message
        #: every candidate tried for the call that raised this, filled in by the router
        self.attempts: list[Attempt] = []
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        where = f"{self.provider}:{self.model}" if self.provider and self.model else self.provider
        prefix = f"[{where}] " if where else ""
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{prefix}{self.message}{status}"

    def details(self) -> dict[str, Any]:
        """A JSON-ready description that never includes credentials."""
        return {
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "retryable": self.retryable,
            "providerMessage": self.provider_message,
        }


class ConfigError(PolyrouteError):
    """The configuration file or environment is invalid; names the file, key and problem."""

    code = "config_error"


class ProviderError(PolyrouteError):
    """Base of errors that come from (or on the way to) one provider."""

    code = "provider_error"


class NotConfiguredError(ProviderError):
    """The provider cannot be called here: a key, endpoint or model file is missing."""

    code = "not_configured"

    def __init__(self, message: str, *, env_var: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.env_var = env_var

    def details(self) -> dict[str, Any]:
        return {**super().details(), "missingEnvVar": self.env_var}


class AuthenticationError(ProviderError):
    code = "authentication_error"


class PermissionDeniedError(ProviderError):
    code = "permission_denied"


class ModelNotFoundError(ProviderError):
    code = "model_not_found"


class BadRequestError(ProviderError):
    """The provider rejected the request itself; trying again or elsewhere will not help."""

    code = "bad_request"
    fallback = False


class ContextLengthExceededError(BadRequestError):
    code = "context_length_exceeded"


class ContentFilteredError(ProviderError):
    code = "content_filtered"
    fallback = False


class UnsupportedFeatureError(BadRequestError):
    """The request asks for something this provider cannot do (a tool choice, images...)."""

    code = "unsupported_feature"


class RateLimitedError(ProviderError):
    """HTTP 429 or an equivalent; ``retry_after`` is the provider's advice, in seconds."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        return {**super().details(), "retryAfter": self.retry_after}


class ProviderUnavailableError(ProviderError):
    """5xx, overloaded, connection refused or reset: the provider is down right now."""

    code = "provider_unavailable"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class TimeoutError(ProviderError):  # noqa: A001 - deliberately our own, see ``kind``
    """A deadline passed. ``kind`` says which one: connect, first_token, idle, total or queue."""

    code = "timeout"
    retryable = True

    def __init__(self, message: str, *, kind: TimeoutKind = "total", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.kind: TimeoutKind = kind

    def details(self) -> dict[str, Any]:
        return {**super().details(), "timeoutKind": self.kind}


class CapacityError(TimeoutError):
    """No concurrency slot became free before the call's deadline."""

    code = "capacity_exceeded"

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("kind", "queue")
        super().__init__(message, **kw)


class StreamInterruptedError(ProviderError):
    """A stream broke: the connection dropped, it ended with no finish, or a chunk was bad."""

    code = "stream_interrupted"
    retryable = True

    def __init__(self, message: str, *, kind: InterruptKind = "disconnect", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.kind: InterruptKind = kind

    def details(self) -> dict[str, Any]:
        return {**super().details(), "interruptKind": self.kind}


class StructuredOutputError(ProviderError):
    """The model's answer is not JSON, or not JSON matching the requested schema.

    Not a :class:`BadRequestError`: the request was fine and the model failed it, so another
    attempt or candidate may well succeed. ``problems`` lists each violation as
    ``"<json path>: <message>"``.
    """

    code = "structured_output_invalid"
    retryable = True

    def __init__(self, message: str, *, problems: list[str] | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.problems = problems or []

    def details(self) -> dict[str, Any]:
        return {**super().details(), "problems": self.problems}


def _describe(attempt: Attempt) -> str:
    """``openai:gpt-4o-mini error ProviderUnavailableError HTTP 503 after 12 ms (why)``."""
    status = f" HTTP {attempt.status}" if attempt.status else ""
    text = f"{attempt.provider}:{attempt.model} {attempt.outcome} {attempt.error or ''}{status}".replace("  ", " ")
    text += f" after {attempt.elapsed * 1000:.0f} ms"
    if attempt.message:
        why = attempt.message if len(attempt.message) <= 160 else attempt.message[:157] + "..."
        text += f" ({why})"
    return text


class AllCandidatesFailedError(PolyrouteError):
    """Every candidate in the chain failed or was skipped; ``attempts`` lists each one."""

    code = "all_candidates_failed"

    def __init__(self, attempts: list[Attempt], last_error: PolyrouteError | None = None) -> None:
        lines = "; ".join(_describe(a) for a in attempts)
        super().__init__(f"all {len(attempts)} candidate attempts failed: {lines}")
        self.attempts = attempts
        self.last_error = last_error
        if last_error is not None:
            self.status = last_error.status
            self.retryable = last_error.retryable

    def details(self) -> dict[str, Any]:
        return {"attempts": [a.to_dict() for a in self.attempts]}
