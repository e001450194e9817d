"""The router: routing policy over registered providers, and nothing about HTTP.

For each call the router expands the request's model and fallbacks into candidates, then
walks them in order: it skips candidates that cannot be called here (recording why), takes
a concurrency slot within the call's deadline, calls the provider under the right timeout,
and on failure decides from the error's class whether to retry, move on, or stop. Every
outcome, good or bad, is recorded as an :class:`~polyroute.types.Attempt` and returned with
the response or the error, so callers can always see what happened.
"""

from __future__ import annotations

import asyncio
import math
from contextlib import aclosing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from polyroute import errors
from polyroute.providers.base import CallLimits, Provider
from polyroute.router.candidates import expand_chain
from polyroute.router.limits import Limiter
from polyroute.router.retry import RetryPolicy
from polyroute.types import (
    Attempt,
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    ModelRef,
    ModelSpec,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from polyroute.router.sync import SyncRouter

__all__ = ["Router"]

T = TypeVar("T", ChatResponse, EmbeddingResponse)


@dataclass(slots=True)
class Registration:
    """A provider plus the per-provider limits the router enforces for it."""

    provider: Provider
    limiter: Limiter | None
    timeout: float | None


def _wrap_unexpected(exc: Exception, ref: ModelRef, *, streaming: bool) -> errors.PolyrouteError:
    """A provider bug (KeyError on an odd payload, ...) becomes a typed, fall-back-able error."""
    what = f"{type(exc).__name__}: {exc}"
    if streaming:
        return errors.StreamInterruptedError(
            f"the provider's stream could not be read ({what})", kind="malformed", provider=ref.provider, model=ref.model_id
        )
    return errors.ProviderUnavailableError(
        f"the provider's answer could not be read ({what})", provider=ref.provider, model=ref.model_id
    )


class Router:
    """Dispatch chat, streaming chat and embedding requests across providers.

    ``timeout`` is the whole-call deadline (across retries and fallbacks) unless a request
    sets its own. ``first_token_timeout`` and ``idle_timeout`` guard streams: a candidate
    that has produced nothing by then is abandoned for the next one (before output reached
    the caller) or reported as an error (after).
    """

    def __init__(
        self,
        *,
        max_concurrency: int = 64,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
        provider_timeout: float | None = None,
        max_provider_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        aliases: Mapping[str, Sequence[ModelSpec]] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.provider_timeout = provider_timeout
        self.max_provider_concurrency = max_provider_concurrency
        self.retry = retry or RetryPolicy()
        self.aliases: dict[str, list[ModelSpec]] = {k: list(v) for k, v in (aliases or {}).items()}
        self.limiter = Limiter(max_concurrency, "the router")
        self._registry: dict[str, Registration] = {}
        self._sync: SyncRouter | None = None

    # ------------------------------------------------------------------ registry

    def register(
        self, provider: Provider, *, name: str | None = None, max_concurrency: int | None = None, timeout: float | None = None
    ) -> Provider:
        """Make ``provider`` callable as ``"<name>:<model_id>"`` (name defaults to provider.name)."""
        key = name or provider.name
        limit = max_concurrency or self.max_provider_concurrency
        self._registry[key] = Registration(
            provider=provider,
            limiter=Limiter(limit, f"provider '{key}'") if limit else None,
            timeout=timeout if timeout is not None else self.provider_timeout,
        )
        return provider

    def add_alias(self, name: str, candidates: Sequence[ModelSpec]) -> None:
        if ":" in name:
            raise ValueError(f"alias {name!r} must not contain ':' (that is a model reference)")
        self.aliases[name] = list(candidates)

    @property
    def providers(self) -> Mapping[str, Provider]:
        return {name: reg.provider for name, reg in self._registry.items()}

    def registration(self, name: str) -> Registration | None:
        return self._registry.get(name)

    def candidates(self, model: ModelSpec, fallbacks: Sequence[ModelSpec] = ()) -> list[ModelRef]:
        """The ordered candidates a call with this model and these fallbacks would try."""
        return expand_chain(model, fallbacks, self.aliases)

    # ------------------------------------------------------------------ shared policy

    def _skip_reason(self, ref: ModelRef) -> errors.NotConfiguredError | None:
        reg = self._registry.get(ref.provider)
        if reg is None:
            return errors.NotConfiguredError(
                f"no provider named '{ref.provider}' is registered", provider=ref.provider, model=ref.model_id
            )
        missing = reg.provider.missing_config()
        if missing:
            return errors.NotConfiguredError(
                f"provider '{ref.provider}' is not configured: set {missing}",
                env_var=missing,
                provider=ref.provider,
                model=ref.model_id,
            )
        return None

    def _candidate_deadline(self, reg: Registration, ref: ModelRef, deadline: float, now: float) -> float:
        limit = ref.timeout_ms / 1000 if ref.timeout_ms else reg.timeout
        return min(deadline, now + limit) if limit else deadline

    def _limits(self, remaining: float) -> CallLimits:
        read = self.idle_timeout if self.idle_timeout else remaining
        return CallLimits(connect=min(self.connect_timeout, remaining), read=max(0.001, min(read, remaining)))

    @staticmethod
    def _apply_ref(request: Any, ref: ModelRef) -> Any:
        update: dict[str, Any] = {}
        if ref.temperature is not None and hasattr(request, "temperature"):
            update["temperature"] = ref.temperature
        if ref.max_tokens is not None and hasattr(request, "max_tokens"):
            update["max_tokens"] = ref.max_tokens
        return request.model_copy(update=update) if update else request

    @staticmethod
    def _failed(ref: ModelRef, exc: errors.PolyrouteError, elapsed: float, retry: int, waited: float) -> Attempt:
        return Attempt(
            provider=ref.provider,
            model=ref.model_id,
            outcome="error",
            elapsed=elapsed,
            error=type(exc).__name__,
            status=exc.status,
            message=exc.message if not exc.provider_message else f"{exc.message}: {exc.provider_message}",
            retry=retry,
            waited=waited,
        )

    @staticmethod
    def _skipped(ref: ModelRef, exc: errors.PolyrouteError) -> Attempt:
        return Attempt(ref.provider, ref.model_id, "skipped", error=type(exc).__name__, message=exc.message)

    def _give_up(self, attempts: list[Attempt], last: errors.PolyrouteError | None) -> errors.AllCandidatesFailedError:
        if not attempts:
            return errors.AllCandidatesFailedError([], errors.ConfigError("the request names no candidate"))
        error = errors.AllCandidatesFailedError(attempts, last)
        error.attempts = attempts
        return error

    def _retry_wait(self, exc: errors.PolyrouteError, retry: int, calls: int, deadline: float) -> float | None:
        """Seconds to wait before retrying the same candidate, or None to move on."""
        if calls >= self.retry.max_attempts:
            return None
        wait = self.retry.wait_before_retry(retry + 1, exc)
        if wait is None or asyncio.get_running_loop().time() + wait >= deadline:
            return None
        return wait

    # ------------------------------------------------------------------ non-streaming

    async def _walk(
        self,
        chain: list[ModelRef],
        timeout: float | None,
        call: Callable[[Registration, ModelRef, CallLimits], Awaitable[T]],
    ) -> T:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + (timeout or self.timeout)
        attempts: list[Attempt] = []
        last: errors.PolyrouteError | None = None
        calls = 0
        await self.limiter.acquire(deadline)
        try:
            for ref in chain:
                skip = self._skip_reason(ref)
                if skip is not None:
                    attempts.append(self._skipped(ref, skip))
                    last = last or skip
                    continue
                reg = self._registry[ref.provider]
                retry, waited = 0, 0.0
                while calls < self.retry.max_attempts:
                    now = loop.time()
                    if now >= deadline:
                        last = errors.TimeoutError("the call's deadline passed", kind="total")
                        return self._raise(attempts, last)
                    calls += 1
                    cand_deadline = self._candidate_deadline(reg, ref, deadline, now)
                    try:
                        if reg.limiter is not None:
                            await reg.limiter.acquire(cand_deadline, provider=ref.provider, model=ref.model_id)
                        try:
                            async with asyncio.timeout_at(cand_deadline):
                                result = await call(reg, ref, self._limits(cand_deadline - now))
                        finally:
                            if reg.limiter is not None:
                                reg.limiter.release()
                    except TimeoutError:
                        exc: errors.PolyrouteError = errors.TimeoutError(
                            f"no answer within {cand_deadline - now:.3g}s", kind="total", provider=ref.provider, model=ref.model_id
                        )
                    except errors.PolyrouteError as caught:
                        exc = caught
                    except Exception as caught:  # noqa: BLE001 - a provider bug must not escape untyped
                        exc = _wrap_unexpected(caught, ref, streaming=False)
                    else:
                        attempts.append(Attempt(ref.provider, ref.model_id, "ok", loop.time() - now, retry=retry, waited=waited))
                        result.latency = loop.time() - start
                        result.attempts = attempts
                        return result
                    attempts.append(self._failed(ref, exc, loop.time() - now, retry, waited))
                    last = exc
                    if isinstance(exc, errors.NotConfiguredError):
                        attempts[-1].outcome = "skipped"
                        break
                    if not exc.fallback:
                        exc.attempts = attempts
                        raise exc
                    wait = self._retry_wait(exc, retry, calls, deadline)
                    if wait is None:
                        break
                    await asyncio.sleep(wait)
                    retry, waited = retry + 1, wait
        finally:
            self.limiter.release()
        return self._raise(attempts, last)

    def _raise(self, attempts: list[Attempt], last: errors.PolyrouteError | None) -> Any:
        raise self._give_up(attempts, last)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """One completion from the first candidate that answers."""
        chain = self.candidates(request.model, request.fallbacks)

        async def call(reg: Registration, ref: ModelRef, limits: CallLimits) -> ChatResponse:
            return await reg.provider.chat(ref.model_id, self._apply_ref(request, ref), limits)

        return await self._walk(chain, request.timeout, call)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """One vector per input, in order, from the first candidate that answers."""
        chain = self.candidates(request.model, request.fallbacks)

        async def call(reg: Registration, ref: ModelRef, limits: CallLimits) -> EmbeddingResponse:
            if not reg.provider.capabilities.embeddings:
                raise errors.NotConfiguredError(
                    f"provider '{ref.provider}' does not offer embeddings", provider=ref.provider, model=ref.model_id
                )
            response = await reg.provider.embed(ref.model_id, request.input, limits, dimensions=request.dimensions)
            if len(response.vectors) != len(request.input):
                raise errors.ProviderUnavailableError(
                    f"asked for {len(request.input)} embeddings, got {len(response.vectors)}",
                    provider=ref.provider,
                    model=ref.model_id,
                )
            return response

        return await self._walk(chain, request.timeout, call)

    # ------------------------------------------------------------------ streaming

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatStreamEvent]:
        """Stream the first candidate that produces output; see the class docstring for timeouts.

        Failures before any token reached the caller fall through to the next candidate.
        After that the caller gets an ``error`` event and then the exception: a stream never
        ends as if it were complete when it was not.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + (request.timeout or self.timeout)
        chain = self.candidates(request.model, request.fallbacks)
        attempts: list[Attempt] = []
        last: errors.PolyrouteError | None = None
        calls = 0
        await self.limiter.acquire(deadline)
        try:
            for ref in chain:
                skip = self._skip_reason(ref)
                if skip is not None:
                    attempts.append(self._skipped(ref, skip))
                    last = last or skip
                    continue
                reg = self._registry[ref.provider]
                retry, waited = 0, 0.0
                while calls < self.retry.max_attempts:
                    now = loop.time()
                    if now >= deadline:
                        self._raise(attempts, errors.TimeoutError("the call's deadline passed", kind="total"))
                    calls += 1
                    run = _StreamRun(self, reg, ref, self._apply_ref(request, ref), self._candidate_deadline(reg, ref, deadline, now))
                    try:
                        async with aclosing(run.events()) as events:
                            async for event in events:
                                if event.type == "end":
                                    attempts.append(
                                        Attempt(ref.provider, ref.model_id, "ok", loop.time() - now, retry=retry, waited=waited)
                                    )
                                    assert event.response is not None
                                    event.response.latency = loop.time() - start
                                    event.response.attempts = attempts
                                    event.attempts = attempts
                                yield event
                        return
                    except errors.PolyrouteError as exc:
                        attempts.append(self._failed(ref, exc, loop.time() - now, retry, waited))
                        last = exc
                        if run.committed:
                            exc.attempts = attempts
                            yield ChatStreamEvent(
                                "error", error=exc, provider=ref.provider, model=ref.model_id, attempts=attempts
                            )
                            raise
                        if isinstance(exc, errors.NotConfiguredError):
                            attempts[-1].outcome = "skipped"
                            break
                        if not exc.fallback:
                            exc.attempts = attempts
                            raise
                        wait = self._retry_wait(exc, retry, calls, deadline)
                        if wait is None:
                            break
                        await asyncio.sleep(wait)
                        retry, waited = retry + 1, wait
        finally:
            self.limiter.release()
        self._raise(attempts, last)

    # ------------------------------------------------------------------ lifecycle & facades

    async def aclose(self) -> None:
        for reg in self._registry.values():
            await reg.provider.aclose()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def sync(self) -> SyncRouter:
        """A blocking facade for scripts: ``router.sync.chat(request)``."""
        if self._sync is None:
            from polyroute.router.sync import SyncRouter

            self._sync = SyncRouter(self)
        return self._sync

    def chat_sync(self, request: ChatRequest) -> ChatResponse:
        return self.sync.chat(request)

    def embed_sync(self, request: EmbeddingRequest) -> EmbeddingResponse:
        return self.sync.embed(request)

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, env_file: str | Path | None = ".env") -> Router:
        """Build a ready router from ``config/default.yaml`` (or ``path``) and ``.env``."""
        from polyroute.config import build_router, load_environment, load_settings

        environ = load_environment(env_file)
        return build_router(load_settings(path, environ=environ), environ)


class _StreamRun:
    """One candidate's stream under the router's first-token, idle and total deadlines.

    Events before the first token are held back (nothing has reached the caller yet, so a
    failure can still fall through to the next candidate); ``committed`` turns true when the
    first token or tool call is released.
    """

    __slots__ = ("committed", "deadline", "ref", "reg", "request", "router")

    def __init__(self, router: Router, reg: Registration, ref: ModelRef, request: ChatRequest, deadline: float) -> None:
        self.router = router
        self.reg = reg
        self.ref = ref
        self.request = request
        self.deadline = deadline
        self.committed = False

    def _timeout(self, kind: errors.TimeoutKind, seconds: float) -> errors.TimeoutError:
        what = {"first_token": "no first token", "idle": "no stream event", "total": "the stream did not finish"}.get(kind, kind)
        return errors.TimeoutError(
            f"{what} within {seconds:.3g}s", kind=kind, provider=self.ref.provider, model=self.ref.model_id
        )

    async def events(self) -> AsyncIterator[ChatStreamEvent]:
        loop = asyncio.get_running_loop()
        router, ref, reg = self.router, self.ref, self.reg
        started = loop.time()
        if reg.limiter is not None:
            await reg.limiter.acquire(self.deadline, provider=ref.provider, model=ref.model_id)
        upstream = reg.provider.stream(ref.model_id, self.request, router._limits(self.deadline - started))
        held: list[ChatStreamEvent] = []
        text: list[str] = []
        tool_calls: list[ToolCall] = []
        usage: Usage | None = None
        first_gap = router.first_token_timeout or math.inf
        idle_gap = router.idle_timeout or math.inf
        try:
            while True:
                now = loop.time()
                if self.committed:
                    kind: errors.TimeoutKind = "idle" if now + idle_gap < self.deadline else "total"
                    when = min(self.deadline, now + idle_gap)
                else:
                    kind = "first_token" if started + first_gap < self.deadline else "total"
                    when = min(self.deadline, started + first_gap)
                try:
                    async with asyncio.timeout_at(when):
                        event = await upstream.__anext__()
                except StopAsyncIteration:
                    raise errors.StreamInterruptedError(
                        "the stream ended without a finish marker", kind="truncated", provider=ref.provider, model=ref.model_id
                    ) from None
                except TimeoutError:
                    raise self._timeout(kind, when - (now if self.committed else started)) from None
                except errors.PolyrouteError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a provider bug must not escape untyped
                    raise _wrap_unexpected(exc, ref, streaming=True) from exc
                etype = event.type
                if etype == "token":
                    text.append(event.delta)
                elif etype == "tool_call":
                    if event.tool_call is not None:
                        tool_calls.append(event.tool_call)
                elif etype == "usage":
                    usage = event.usage
                elif etype == "error":
                    raise event.error or errors.StreamInterruptedError(
                        "the provider reported an error", kind="provider_error", provider=ref.provider, model=ref.model_id
                    )
                if etype == "end":
                    usage = event.usage or usage
                    message = Message.model_construct(
                        role="assistant", content="".join(text) or None, tool_calls=tool_calls or None, name=None, tool_call_id=None
                    )
                    event.response = ChatResponse.model_construct(
                        id=event.response.id if event.response is not None else "",
                        message=message,
                        finish_reason=event.finish_reason or "stop",
                        usage=usage or Usage(),
                        provider=ref.provider,
                        model=ref.model_id,
                        latency=0.0,
                        attempts=[],
                    )
                    event.usage = event.response.usage
                    event.provider, event.model = ref.provider, ref.model_id
                    self.committed = True
                    for early in held:
                        yield early
                    yield event
                    return
                if self.committed:
                    yield event
                elif etype == "token" or etype == "tool_call":
                    self.committed = True
                    for early in held:
                        yield early
                    held.clear()
                    yield event
                else:
                    held.append(event)
        finally:
            close = getattr(upstream, "aclose", None)
            if close is not None:
                await close()
            if reg.limiter is not None:
                reg.limiter.release()
