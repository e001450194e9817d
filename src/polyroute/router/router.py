"""The router: routing policy over registered providers, and nothing about HTTP.

For each call the router expands the request's model and fallbacks into candidates (an
alias with a balancing strategy is ordered by the balancer first), then walks them in
order: it skips candidates that cannot be called here or whose circuit is open (recording
why), takes a concurrency slot within the call's deadline, calls the provider under the
right timeout, and on failure decides from the error's class and the alias's
:class:`RoutingPolicy` whether to retry, move on, jump to a named candidate, or stop. Every
outcome is recorded as an :class:`~polyroute.types.Attempt` and returned with the response
or the error, so callers can always see what happened. The walks themselves live in
:mod:`~polyroute.router.walk` and :mod:`~polyroute.router.streaming`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyroute import errors
from polyroute.providers.base import CallLimits, Provider
from polyroute.router.balancer import Balancer, PriceBook
from polyroute.router.breaker import BreakerSettings
from polyroute.router.candidates import expand_chain
from polyroute.router.deployments import DeploymentTable
from polyroute.router.health import RouterHealth
from polyroute.router.hedging import HedgeBudget
from polyroute.router.limits import Limiter
from polyroute.router.plan import CallPlan
from polyroute.router.policy import DEFAULT_POLICY, Deployment, RoutingPolicy, ref_key
from polyroute.router.retry import RetryPolicy
from polyroute.router.streaming import stream_walk
from polyroute.router.tokens import prompt_tokens
from polyroute.router.walk import walk
from polyroute.types import (
    Attempt,
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelRef,
    ModelSpec,
)

if TYPE_CHECKING:
    from polyroute.router.shared import SharedState
    from polyroute.router.sync import SyncRouter

__all__ = ["PriceBook", "Registration", "Router"]


@dataclass(slots=True)
class Registration:
    """A provider plus the per-provider limits the router enforces for it."""

    provider: Provider
    limiter: Limiter | None
    timeout: float | None


class Router:
    """Dispatch chat, streaming chat and embedding requests across providers.

    ``timeout`` is the whole-call deadline (across retries and fallbacks) unless a request
    sets its own. ``first_token_timeout`` and ``idle_timeout`` guard streams: a candidate
    that has produced nothing by then is abandoned for the next one (before output reached
    the caller) or reported as an error (after). ``breaker`` configures the per-deployment
    circuit breakers, ``policy`` the routing of calls that name no alias with a policy of
    its own; ``clock`` (monotonic seconds) drives breakers, rate limits and health, and is
    injectable so tests need no sleeping; ``rng`` drives the balancer and the retry jitter
    (seed it to replay a run exactly). ``shared`` (a
    :class:`~polyroute.router.shared.SharedState`) makes rpm/tpm limits and open circuits
    common to every replica using the same Redis; without it they are per process.
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
        breaker: BreakerSettings | None = None,
        policy: RoutingPolicy | None = None,
        policies: Mapping[str, RoutingPolicy] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        prices: PriceBook | None = None,
        shared: SharedState | None = None,
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
        self.clock = clock
        #: prices per provider/model (e.g. :class:`polyroute.pricing.PriceTable`): fills ``cost``
        self.prices = prices
        self.default_policy = dataclasses.replace(policy, name="") if policy is not None else DEFAULT_POLICY
        self.policies: dict[str, RoutingPolicy] = {}
        self.deployments = DeploymentTable(breaker, clock)
        #: rpm/tpm buckets and open circuits shared with other replicas (None: per process)
        self.shared = shared
        self._balancer = Balancer(self.deployments, rng)
        self._balanced = False
        self._need_tokens = False
        self._budgets: dict[str, HedgeBudget] = {}
        self._registry: dict[str, Registration] = {}
        self._sync: SyncRouter | None = None
        for alias, alias_policy in (policies or {}).items():
            self.set_policy(alias, alias_policy)

    # ------------------------------------------------------------------ registry

    def register(
        self,
        provider: Provider,
        *,
        name: str | None = None,
        max_concurrency: int | None = None,
        timeout: float | None = None,
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

    def add_alias(
        self, name: str, candidates: Sequence[ModelSpec | Deployment], *, policy: RoutingPolicy | None = None
    ) -> None:
        """Define ``name`` as ``candidates`` in fallback order, optionally with a routing policy.

        A :class:`Deployment` among the candidates joins the policy's balanced group (with
        its weight, prices and limits); the policy's strategy defaults to ``weighted`` then.
        """
        if ":" in name:
            raise ValueError(f"alias {name!r} must not contain ':' (that is a model reference)")
        groups = tuple(c for c in candidates if isinstance(c, Deployment))
        self.aliases[name] = [c.model if isinstance(c, Deployment) else c for c in candidates]
        if groups:
            policy = policy or RoutingPolicy(strategy="weighted")
            policy = dataclasses.replace(policy, deployments=(*policy.deployments, *groups))
        if policy is not None:
            self.set_policy(name, policy)

    def set_policy(self, alias: str, policy: RoutingPolicy) -> None:
        """Attach ``policy`` to ``alias`` (its group members are put first in the alias if missing)."""
        policy = dataclasses.replace(policy, name=alias)
        entries = self.aliases.setdefault(alias, [])
        present = {str(e).strip() for e in entries}
        missing = [d.model for d in policy.deployments if d.key not in present]
        if missing:
            self.aliases[alias] = [*missing, *entries]
        now = self.clock()
        for d in policy.deployments:
            key = ref_key(d.model)
            if key is not None:
                self.deployments.get(*key).configure(d, now)
        self.policies[alias] = policy
        self._budgets.pop(alias, None)
        self._balanced = any(p.strategy != "ordered" for p in self.policies.values())
        self._need_tokens = any(
            p.strategy == "lowest_cost" or any(d.tpm for d in p.deployments) for p in self.policies.values()
        )

    @property
    def providers(self) -> Mapping[str, Provider]:
        return {name: reg.provider for name, reg in self._registry.items()}

    def registration(self, name: str) -> Registration | None:
        return self._registry.get(name)

    def candidates(
        self,
        model: ModelSpec,
        fallbacks: Sequence[ModelSpec] = (),
        *,
        request: ChatRequest | EmbeddingRequest | None = None,
        streaming: bool = False,
    ) -> list[ModelRef]:
        """The ordered candidates a call with this model and these fallbacks would try.

        Without ``request`` balanced groups are listed in configuration order; with it, in
        the order the balancer would pick for that request right now (``streaming`` makes
        ``lowest_latency`` rank by time to first token instead of total latency).
        """
        if request is None or not self._balanced:
            return expand_chain(model, fallbacks, self.aliases)
        balancer = self._balancer
        session = request.metadata.get("session_id") if isinstance(request, ChatRequest) else None
        prompt = prompt_tokens(request) if self._need_tokens else 0
        output = request.max_tokens if isinstance(request, ChatRequest) else 1

        def reorder(alias: str, entries: Sequence[ModelSpec]) -> Sequence[ModelSpec]:
            policy = self.policies.get(alias)
            if policy is None or policy.strategy == "ordered":
                return entries
            return balancer.order(
                alias,
                policy,
                list(entries),
                session=session,
                streaming=streaming,
                prompt_tokens=prompt,
                output_tokens=output,
                prices=self.prices,
            )

        return expand_chain(model, fallbacks, self.aliases, reorder)

    def policy_for(self, model: ModelSpec) -> RoutingPolicy:
        """The routing policy a call naming ``model`` follows."""
        if isinstance(model, str):
            return self.policies.get(model.strip(), self.default_policy)
        return self.default_policy

    def finish(self, result: ChatResponse | EmbeddingResponse, attempts: list[Attempt], latency: float) -> None:
        """Stamp a successful result with its latency, attempts, and cost summed over attempts.

        ``usage`` stays the answer's own; the attempts carry what every other call was billed
        (hedge losers, a stream cut short before a resume), which ``total_usage`` and
        ``cost`` add up, so a hedged call costs what it really cost.
        """
        result.latency = latency
        result.attempts = attempts
        if self.prices is not None:
            total: float | None = 0.0
            for attempt in attempts:
                if attempt.usage is None:
                    continue
                cost = self.prices.cost_of(attempt.usage, attempt.provider, attempt.model)
                if cost is None and (attempt.usage.prompt_tokens or attempt.usage.completion_tokens):
                    total = None
                    break
                total = (total or 0.0) + (cost or 0.0)
            result.cost = total

    def health(self) -> RouterHealth:
        """Every known deployment's breaker state, error rate, latency and load, right now."""
        for alias in self.aliases:
            try:
                refs = expand_chain(alias, (), self.aliases)
            except errors.ConfigError:
                continue
            for ref in refs:
                if ref.provider in self._registry:
                    self.deployments.get(ref.provider, ref.model_id)
        for state in self.deployments:
            reg = self._registry.get(state.provider)
            if reg is not None:
                state.check_key(getattr(reg.provider, "api_key", None))
        now = self.clock()
        shared = self.shared
        rows = sorted(
            (s.snapshot(now, shared.remote_state(s.shared_id) if shared else (None, 0.0)) for s in self.deployments),
            key=lambda d: (d.provider, d.model),
        )
        return RouterHealth(
            in_flight=self.limiter.in_flight,
            max_concurrency=self.limiter.limit,
            waiting=self.limiter.waiting,
            deployments=rows,
            shared_state=self.shared.status if self.shared is not None else None,
        )

    # ------------------------------------------------------------------ shared policy

    def _skip_reason(self, ref: ModelRef) -> errors.NotConfiguredError | None:
        reg = self._registry.get(ref.provider)
        if reg is None:
            return errors.NotConfiguredError(
                f"no provider named '{ref.provider}' is registered", provider=ref.provider, model=ref.model_id
            )
        missing = reg.provider.missing_config()
        if missing:
            # ``missing`` is usually an env var name; some providers give an instruction instead
            is_var = missing.replace("_", "").isalnum() and missing.upper() == missing
            return errors.NotConfiguredError(
                f"provider '{ref.provider}' is not configured: {'set ' if is_var else ''}{missing}",
                env_var=missing if is_var else None,
                provider=ref.provider,
                model=ref.model_id,
            )
        return None

    def _candidate_deadline(self, reg: Registration, ref: ModelRef, deadline: float, now: float) -> float:
        limit = ref.timeout_ms / 1000 if ref.timeout_ms else reg.timeout
        return min(deadline, now + limit) if limit else deadline

    def _limits(self, remaining: float) -> CallLimits:
        """Socket timeouts for one provider call: connect as configured, read bounded by the deadline.

        The read timeout is deliberately not the stream idle timeout: a plain call may take
        its whole deadline to answer, and a stream's first byte may take the first-token
        timeout; the streaming walk enforces first-token and idle gaps itself, per event.
        """
        remaining = max(0.001, remaining)
        return CallLimits(connect=min(self.connect_timeout, remaining), read=remaining)

    @staticmethod
    def _apply_ref(request: Any, ref: ModelRef) -> Any:
        update: dict[str, Any] = {}
        if ref.temperature is not None and hasattr(request, "temperature"):
            update["temperature"] = ref.temperature
        if ref.max_tokens is not None and hasattr(request, "max_tokens"):
            update["max_tokens"] = ref.max_tokens
        return request.model_copy(update=update) if update else request

    def _retry_wait(self, exc: errors.PolyrouteError, retry: int, calls: int, deadline: float) -> float | None:
        """Seconds to wait before retrying the same candidate, or None to move on."""
        if calls >= self.retry.max_attempts:
            return None
        wait = self.retry.wait_before_retry(retry + 1, exc, self._balancer.rng)
        if wait is None or asyncio.get_running_loop().time() + wait >= deadline:
            return None
        return wait

    def _hedge_budget(self, policy: RoutingPolicy) -> HedgeBudget:
        budget = self._budgets.get(policy.name)
        if budget is None:
            assert policy.hedge is not None
            budget = self._budgets[policy.name] = HedgeBudget(policy.hedge.budget, policy.hedge.burst)
        return budget

    def _plan(self, request: ChatRequest | EmbeddingRequest, *, streaming: bool = False) -> CallPlan:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (request.timeout or self.timeout)
        chain = self.candidates(request.model, request.fallbacks, request=request, streaming=streaming)
        tokens = prompt_tokens(request) if self._need_tokens else 1
        if isinstance(request, ChatRequest) and self._need_tokens:
            tokens += request.max_tokens or 0
        return CallPlan(self, chain, self.policy_for(request.model), deadline, tokens, request)

    # ------------------------------------------------------------------ calls

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """One completion from the first candidate that answers."""
        plan = self._plan(request)

        async def call(reg: Registration, ref: ModelRef, limits: CallLimits) -> ChatResponse:
            return await reg.provider.chat(ref.model_id, self._apply_ref(request, ref), limits)

        return await walk(self, plan, call)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """One vector per input, in order, from the first candidate that answers."""
        plan = self._plan(request)

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

        return await walk(self, plan, call)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatStreamEvent, None]:
        """Stream the first candidate that produces output.

        Failures before any token reached the caller fall through to the next candidate.
        After that the caller gets an ``error`` event and then the exception (a stream never
        ends as if it were complete when it was not), unless the alias's policy asks to
        ``resume`` on the next candidate, which the attempts then record.
        """
        async with contextlib.aclosing(stream_walk(self, self._plan(request, streaming=True), request)) as events:
            async for event in events:
                yield event

    # ------------------------------------------------------------------ lifecycle & facades

    async def aclose(self) -> None:
        for reg in self._registry.values():
            await reg.provider.aclose()
        if self.shared is not None:
            await self.shared.aclose()

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
