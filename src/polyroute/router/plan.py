"""One call's walk over its candidates: who is next, who is skipped and why, what an error means.

Both the non-streaming and the streaming walkers drive a :class:`CallPlan`; it owns the
attempt list, so every decision (skipped: not configured, circuit open, auth failed, over
our rpm/tpm limit; retried; waited; moved on; stopped) is recorded in one place and in the
same words for chat, embeddings and streams.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from polyroute import errors
from polyroute.router.breaker import PROBE, REJECT, classify
from polyroute.router.deployments import DeploymentState
from polyroute.router.policy import RoutingPolicy
from polyroute.types import Attempt, ModelRef

if TYPE_CHECKING:
    from polyroute.router.router import Registration, Router

__all__ = ["CallPlan", "Pick"]

log = logging.getLogger("polyroute.router")


class Pick:
    """An admitted candidate: its registration and state, and how it got here."""

    __slots__ = ("note", "probe", "ref", "reg", "retry", "state", "waited")

    def __init__(self, ref: ModelRef, reg: Registration, state: DeploymentState, *, probe: bool = False) -> None:
        self.ref = ref
        self.reg = reg
        self.state = state
        #: this call is its deployment's half-open probe (its outcome closes or re-opens the circuit)
        self.probe = probe
        self.retry = 0
        self.waited = 0.0
        self.note: str | None = None


class CallPlan:
    __slots__ = ("_deferred", "attempts", "calls", "chain", "deadline", "index", "last", "policy", "router", "tokens")

    def __init__(
        self, router: Router, chain: list[ModelRef], policy: RoutingPolicy, deadline: float, tokens: int
    ) -> None:
        self.router = router
        self.chain = chain
        self.policy = policy
        self.deadline = deadline
        self.tokens = tokens
        self.index = 0
        self.calls = 0
        self.attempts: list[Attempt] = []
        self.last: errors.PolyrouteError | None = None
        self._deferred: list[tuple[float, int, ModelRef]] = []

    # ------------------------------------------------------------------ admission

    def _prepare(self, ref: ModelRef) -> tuple[Registration, DeploymentState] | None:
        """The candidate's registration and state, or None when it cannot be called here (recorded)."""
        router = self.router
        skip = router._skip_reason(ref)
        if skip is not None:
            self.attempts.append(
                Attempt(ref.provider, ref.model_id, "skipped", error=type(skip).__name__, message=skip.message)
            )
            self.last = self.last or skip
            return None
        reg = router._registry[ref.provider]
        state = router.deployments.get(ref.provider, ref.model_id)
        state.check_key(getattr(reg.provider, "api_key", None))
        return reg, state

    def _admit(self, ref: ModelRef) -> Pick | float | None:
        """A Pick, None (skipped and recorded), or seconds until our own rpm/tpm limit allows it.

        With shared state a limited deployment needs a Redis round trip, which this
        synchronous check cannot make: it answers 0.0 and :meth:`_admit_async` decides.
        """
        got = self._prepare(ref)
        if got is None:
            return None
        reg, state = got
        now = self.router.clock()
        limited = state.rpm is not None or state.tpm is not None
        if limited:
            if self.router.shared is not None:
                return 0.0
            wait = state.limit_wait(self.tokens, now)
            if wait > 0:
                return wait
        ticket = self._ticket(ref, state, now)
        if not ticket:
            return None
        if limited:
            state.take_limits(self.tokens, now)
        return Pick(ref, reg, state, probe=ticket == PROBE)

    async def _admit_async(self, ref: ModelRef) -> Pick | float | None:
        """:meth:`_admit`, checking a limited deployment against the replicas' shared buckets.

        One Redis round trip; when Redis is unavailable this replica's own buckets decide.
        Either way the local buckets are debited too, so they are current if Redis goes away.
        """
        got = self._admit(ref)
        shared = self.router.shared
        if shared is None or not isinstance(got, float) or got > 0:
            return got
        reg = self.router._registry[ref.provider]
        state = self.router.deployments.get(ref.provider, ref.model_id)
        ticket = self._ticket(ref, state, self.router.clock())
        if not ticket:
            return None
        wait = await shared.admit(state.shared_id, state.rpm, state.tpm, self.tokens)
        now = self.router.clock()
        if wait is None:
            wait = state.limit_wait(self.tokens, now)
        if wait > 0:
            state.breaker.release(now, probe=ticket == PROBE)
            return wait
        state.take_limits(self.tokens, now)
        return Pick(ref, reg, state, probe=ticket == PROBE)

    def _ticket(self, ref: ModelRef, state: DeploymentState, now: float) -> int:
        """The breaker's answer (0: skipped and recorded), including circuits other replicas opened."""
        ticket = state.breaker.allow(now)
        if not ticket:
            self.attempts.append(self._circuit_skip(ref, state, now))
            return ticket
        shared = self.router.shared
        if shared is not None:
            remote = shared.remote_open(state.shared_id)
            if remote > 0:
                state.breaker.release(now, probe=ticket == PROBE)
                message = f"circuit opened by another replica; next probe in {remote:.3g}s"
                self.attempts.append(
                    Attempt(ref.provider, ref.model_id, "skipped", error="CircuitOpen", message=message)
                )
                return REJECT
        return ticket

    def _circuit_skip(self, ref: ModelRef, state: DeploymentState, now: float) -> Attempt:
        b = state.breaker
        if b.state == "auth_failed":
            log.warning(
                "%s:%s skipped: its key (id %s) was refused (%s); set a new key to use it again",
                ref.provider,
                ref.model_id,
                state.key_id,
                b.last_error,
            )
            message = f"its key was refused ({b.last_error}); skipped until the key changes"
            return Attempt(ref.provider, ref.model_id, "skipped", error="AuthFailed", message=message)
        if b.state == "half_open":
            message = "circuit half-open: a probe call is already in flight"
        else:
            message = (
                f"circuit open after {b.consecutive} failures (last: {b.last_error}); "
                f"next probe in {b.retry_in(now):.3g}s"
            )
        return Attempt(ref.provider, ref.model_id, "skipped", error="CircuitOpen", message=message)

    def has_more(self) -> bool:
        return self.index < len(self.chain) and self.calls < self.router.retry.max_attempts

    def next_now(self) -> Pick | None:
        """The next candidate that can be called right now (deferring rate-limited ones)."""
        while self.has_more():
            ref = self.chain[self.index]
            self.index += 1
            pick = self._took(self._admit(ref), ref)
            if pick is not None:
                return pick
        return None

    def _took(self, got: Pick | float | None, ref: ModelRef) -> Pick | None:
        """``got`` if it is a Pick; a wait defers the candidate (recorded as skipped)."""
        if isinstance(got, Pick):
            return got
        if got is not None:
            self._deferred.append((got, self.index, ref))
            if got > 0:
                message = f"over our rpm/tpm limit for it (a slot frees in {got:.3g}s); trying the others first"
            else:
                message = "its shared rpm/tpm limit needs a round trip; trying the others first"
            self.attempts.append(
                Attempt(ref.provider, ref.model_id, "skipped", error="LocalRateLimit", message=message)
            )
        return None

    async def next(self) -> Pick | None:
        """The next candidate, waiting for a rate-limited one when nothing else is left."""
        if self.router.shared is None:
            pick = self.next_now()
        else:
            pick = None
            while pick is None and self.has_more():
                ref = self.chain[self.index]
                self.index += 1
                pick = self._took(await self._admit_async(ref), ref)
        if pick is not None or self.calls >= self.router.retry.max_attempts:
            return pick
        loop = asyncio.get_running_loop()
        waited: dict[int, float] = {}
        while self._deferred:
            self._deferred.sort()
            wait, order, ref = self._deferred.pop(0)
            if loop.time() + wait >= self.deadline:
                continue
            await asyncio.sleep(wait)
            waited[order] = waited.get(order, 0.0) + wait
            got = await self._admit_async(ref)
            if isinstance(got, Pick):
                got.waited = waited[order]
                got.note = f"waited {got.waited:.3g}s for our rpm/tpm limit"
                return got
            if got is not None:
                self._deferred.append((got, order, ref))
        return None

    def retry_same(self, pick: Pick, wait: float) -> bool:
        """Re-admit ``pick`` after a backoff of ``wait`` (its breaker may have opened meanwhile)."""
        now = self.router.clock()
        ticket = pick.state.breaker.allow(now)
        if not ticket:
            self.attempts.append(self._circuit_skip(pick.ref, pick.state, now))
            return False
        pick.probe = ticket == PROBE
        pick.retry += 1
        pick.waited = wait
        return True

    # ------------------------------------------------------------------ outcomes

    def succeeded(self, pick: Pick, elapsed: float, *, outcome: str = "ok", note: str | None = None) -> Attempt:
        state = pick.state
        was = state.breaker.state
        state.breaker.record_success(self.router.clock(), probe=pick.probe)
        if was != "closed" and self.router.shared is not None and state.breaker.state == "closed":
            self.router.shared.publish_closed(state.shared_id)
        state.latency.add(elapsed)
        if pick.note:
            note = f"{pick.note}; {note}" if note else pick.note
        attempt = Attempt(
            pick.ref.provider, pick.ref.model_id, "ok", elapsed, retry=pick.retry, waited=pick.waited, note=note
        )
        if outcome == "resumed":
            attempt.outcome = "resumed"
        self.attempts.append(attempt)
        return attempt

    def failed(self, pick: Pick, exc: errors.PolyrouteError, elapsed: float) -> Attempt:
        """Record a failed call against its deployment (breaker, counters) and in the attempts."""
        ref, state = pick.ref, pick.state
        state.failures += 1
        breaker, now = state.breaker, self.router.clock()
        until = breaker.open_until
        breaker.record_failure(now, exc, probe=pick.probe)
        if breaker.open_until > until and self.router.shared is not None and breaker.state == "open":
            self.router.shared.publish_open(state.shared_id, breaker.retry_in(now))
        if classify(exc) == "auth":
            log.warning(
                "%s:%s refused its key (id %s): %s; skipping it until the key changes",
                ref.provider,
                ref.model_id,
                state.key_id,
                type(exc).__name__,
            )
        attempt = Attempt(
            provider=ref.provider,
            model=ref.model_id,
            outcome="skipped" if isinstance(exc, errors.NotConfiguredError) else "error",
            elapsed=elapsed,
            error=type(exc).__name__,
            status=exc.status,
            message=exc.message if not exc.provider_message else f"{exc.message}: {exc.provider_message}",
            retry=pick.retry,
            waited=pick.waited,
            note=pick.note,
        )
        self.attempts.append(attempt)
        self.last = exc
        return attempt

    def cancelled(self, pick: Pick, elapsed: float, note: str) -> None:
        ref = pick.ref
        self.attempts.append(
            Attempt(ref.provider, ref.model_id, "cancelled", elapsed, retry=pick.retry, waited=pick.waited, note=note)
        )

    def decide(self, pick: Pick, exc: errors.PolyrouteError) -> float | None:
        """After :meth:`failed`: seconds to wait before retrying ``pick``, None to move on; raises to stop."""
        if isinstance(exc, errors.NotConfiguredError):
            return None
        route: str | None = None
        if isinstance(exc, errors.ContextLengthExceededError):
            route = self.policy.on_context_length
        elif isinstance(exc, errors.ContentFilteredError):
            route = self.policy.on_content_filter
        if route is not None:
            if route == "stop":
                exc.attempts = self.attempts
                raise exc
            if route != "next":
                self._jump(route)
            self.attempts[-1].note = f"{exc.code}: policy routes to {route}"
            return None
        if not exc.fallback:
            exc.attempts = self.attempts
            raise exc
        return self.router._retry_wait(exc, pick.retry, self.calls, self.deadline)

    def _jump(self, route: str) -> None:
        """Try ``route``'s candidates next (those not tried yet), then the rest of the chain."""
        tried = {(r.provider, r.model_id) for r in self.chain[: self.index]}
        targets = [r for r in self.router.candidates(route) if (r.provider, r.model_id) not in tried]
        keys = {(r.provider, r.model_id) for r in targets}
        rest = [r for r in self.chain[self.index :] if (r.provider, r.model_id) not in keys]
        self.chain = [*self.chain[: self.index], *targets, *rest]

    def give_up(self, last: errors.PolyrouteError | None = None) -> errors.AllCandidatesFailedError:
        last = last or self.last
        if not self.attempts:
            return errors.AllCandidatesFailedError([], last or errors.ConfigError("the request names no candidate"))
        return errors.AllCandidatesFailedError(self.attempts, last)
