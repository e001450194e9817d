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
from polyroute.router.tokens import estimated_usage, usage_total
from polyroute.types import Attempt, ChatRequest, EmbeddingRequest, ModelRef, Usage

if TYPE_CHECKING:
    from polyroute.router.router import Registration, Router
    from polyroute.router.shared import RemoteState

__all__ = ["CallPlan", "Pick"]

log = logging.getLogger("polyroute.router")


class Pick:
    """An admitted candidate: its registration and state, and how it got here."""

    __slots__ = ("note", "probe", "ref", "reg", "retry", "shared_probe", "state", "waited")

    def __init__(
        self,
        ref: ModelRef,
        reg: Registration,
        state: DeploymentState,
        *,
        probe: bool = False,
        shared_probe: bool = False,
    ) -> None:
        self.ref = ref
        self.reg = reg
        self.state = state
        #: this call is its deployment's half-open probe (its outcome closes or re-opens the circuit)
        self.probe = probe
        #: ... and holds the replicas' shared probe lease (its outcome is published to all of them)
        self.shared_probe = shared_probe
        self.retry = 0
        self.waited = 0.0
        self.note: str | None = None


def release(router: Router, pick: Pick) -> None:
    """The admitted call ended saying nothing about the deployment (cancelled): free its probe slot."""
    pick.state.breaker.release(router.clock(), probe=pick.probe)
    if pick.shared_probe and router.shared is not None:
        pick.shared_probe = False
        router.shared.release_probe(pick.state.shared_id)


#: what the synchronous admission answers when only a Redis round trip can decide
ROUND_TRIP = 0.0

#: what other replicas said about a deployment (:meth:`SharedState.remote_state`)
Remote = tuple["RemoteState | None", float]


class CallPlan:
    __slots__ = (
        "_deferred",
        "attempts",
        "calls",
        "chain",
        "deadline",
        "index",
        "last",
        "policy",
        "request",
        "router",
        "tokens",
    )

    def __init__(
        self,
        router: Router,
        chain: list[ModelRef],
        policy: RoutingPolicy,
        deadline: float,
        tokens: int,
        request: ChatRequest | EmbeddingRequest,
    ) -> None:
        self.router = router
        self.chain = chain
        self.policy = policy
        self.deadline = deadline
        #: tokens debited from a deployment's tpm bucket at admission (settled after the call)
        self.tokens = tokens
        self.request = request
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

        With shared state, a limited deployment (shared buckets) and one due for a probe
        (the replicas' one probe lease) need a Redis round trip, which this synchronous check
        cannot make: it answers :data:`ROUND_TRIP` and :meth:`_admit_async` decides.
        """
        got = self._prepare(ref)
        if got is None:
            return None
        reg, state = got
        now = self.router.clock()
        limited = state.rpm is not None or state.tpm is not None
        shared = self.router.shared
        remote: Remote = (None, 0.0)
        if shared is not None:
            remote = shared.remote_state(state.shared_id)
            if limited or remote[0] == "half_open" or state.breaker.probe_due(now):
                return ROUND_TRIP
        if limited:
            wait = state.limit_wait(self.tokens, now)
            if wait > 0:
                return wait
        ticket = self._ticket(ref, state, now, remote)
        if not ticket:
            return None
        if limited:
            state.take_limits(self.tokens, now)
        return Pick(ref, reg, state, probe=ticket == PROBE)

    async def _admit_async(self, ref: ModelRef) -> Pick | float | None:
        """:meth:`_admit`, deciding with the replicas' shared state what only Redis knows.

        A probe first takes the shared probe lease (another replica holding it means skip);
        a limited deployment is checked against the shared buckets. One round trip each;
        when Redis is unavailable this replica's own breaker and buckets decide. Either way
        the local buckets are debited too, so they are current if Redis goes away.
        """
        got = self._admit(ref)
        shared = self.router.shared
        if shared is None or not isinstance(got, float) or got > ROUND_TRIP:
            return got
        reg = self.router._registry[ref.provider]
        state = self.router.deployments.get(ref.provider, ref.model_id)
        remote = shared.remote_state(state.shared_id)
        ticket = self._ticket(ref, state, self.router.clock(), remote)
        if not ticket:
            return None
        pick = Pick(ref, reg, state, probe=ticket == PROBE)
        if pick.probe or remote[0] == "half_open":
            lease = max(1.0, self.deadline - asyncio.get_running_loop().time())
            won = await shared.claim_probe(state.shared_id, lease)
            if won is False:
                release(self.router, pick)
                message = "circuit half-open: another replica's probe call is in flight"
                self.attempts.append(
                    Attempt(ref.provider, ref.model_id, "skipped", error="CircuitOpen", message=message)
                )
                return None
            pick.shared_probe = won is True
        if state.rpm is None and state.tpm is None:
            return pick
        wait = await shared.admit(state.shared_id, state.rpm, state.tpm, self.tokens)
        now = self.router.clock()
        if wait is None:
            wait = state.limit_wait(self.tokens, now)
        if wait > 0:
            release(self.router, pick)
            return wait
        state.take_limits(self.tokens, now)
        return pick

    def _ticket(self, ref: ModelRef, state: DeploymentState, now: float, remote: Remote) -> int:
        """The breaker's answer (0: skipped and recorded), including what other replicas said (``remote``)."""
        ticket = state.breaker.allow(now)
        if not ticket:
            self.attempts.append(self._circuit_skip(ref, state, now))
            return ticket
        if remote[0] is not None:
            said, seconds = remote
            if said in ("open", "auth_failed"):
                state.breaker.release(now, probe=ticket == PROBE)
                if said == "open":
                    error, message = "CircuitOpen", f"circuit opened by another replica; next probe in {seconds:.3g}s"
                else:
                    log.warning(
                        "%s:%s skipped: another replica's call was refused with its key (id %s); "
                        "set a new key to use it again",
                        ref.provider,
                        ref.model_id,
                        state.key_id,
                    )
                    error = "AuthFailed"
                    message = "its key was refused on another replica; skipped until the key changes"
                self.attempts.append(Attempt(ref.provider, ref.model_id, "skipped", error=error, message=message))
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
                error = "LocalRateLimit"
                message = f"over our rpm/tpm limit for it (a slot frees in {got:.3g}s); trying the others first"
            else:
                error = "Deferred"
                message = "its shared limit or probe lease needs a round trip; trying the others first"
            self.attempts.append(Attempt(ref.provider, ref.model_id, "skipped", error=error, message=message))
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

    def succeeded(
        self,
        pick: Pick,
        elapsed: float,
        *,
        usage: Usage | None = None,
        outcome: str = "ok",
        note: str | None = None,
    ) -> Attempt:
        """Record an answer: the breaker closes (everywhere, for a shared probe) and tpm settles to ``usage``."""
        state, shared = pick.state, self.router.shared
        was = state.breaker.state
        now = self.router.clock()
        state.breaker.record_success(now, probe=pick.probe)
        if shared is not None and (pick.shared_probe or (was != "closed" and state.breaker.state == "closed")):
            pick.shared_probe = False
            shared.publish_closed(state.shared_id)
        state.latency.add(elapsed)
        if usage is not None and state.tpm is not None:
            self._settle(state, usage, now)
        if pick.note:
            note = f"{pick.note}; {note}" if note else pick.note
        attempt = Attempt(
            pick.ref.provider,
            pick.ref.model_id,
            "ok",
            elapsed,
            retry=pick.retry,
            waited=pick.waited,
            note=note,
            usage=usage,
        )
        if outcome == "resumed":
            attempt.outcome = "resumed"
        self.attempts.append(attempt)
        return attempt

    def _settle(self, state: DeploymentState, usage: Usage, now: float) -> None:
        """Correct the tpm debit made at admission (an estimate) to the tokens the call reported."""
        actual = usage_total(usage)
        if actual <= 0 or state.tpm is None:
            return
        delta = actual - self.tokens
        if delta:
            state.tpm.adjust(delta, now)
            if self.router.shared is not None:
                self.router.shared.settle(state.shared_id, state.tpm, delta)

    def failed(self, pick: Pick, exc: errors.PolyrouteError, elapsed: float) -> Attempt:
        """Record a failed call against its deployment (breaker, counters, shared state) and in the attempts."""
        ref, state, shared = pick.ref, pick.state, self.router.shared
        state.failures += 1
        breaker, now = state.breaker, self.router.clock()
        until = breaker.open_until
        verdict = classify(exc)
        if pick.shared_probe:
            # the replicas' one probe failed: open here too, which publishes the new deadline
            breaker.trip(now, exc, probe=pick.probe)
        else:
            breaker.record_failure(now, exc, probe=pick.probe)
        if shared is not None:
            if breaker.open_until > until and breaker.state == "open":
                pick.shared_probe = False
                shared.publish_open(state.shared_id, breaker.retry_in(now))
            elif verdict == "auth":
                pick.shared_probe = False
                shared.publish_auth(state.shared_id)
            elif pick.shared_probe:
                release(self.router, pick)
        if verdict == "auth":
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

    def cancelled(self, pick: Pick, elapsed: float, note: str) -> Attempt:
        """Record a call we closed ourselves (a hedge loser); :meth:`bill` then says what it cost."""
        ref = pick.ref
        attempt = Attempt(
            ref.provider, ref.model_id, "cancelled", elapsed, retry=pick.retry, waited=pick.waited, note=note
        )
        self.attempts.append(attempt)
        return attempt

    def bill(self, attempt: Attempt, reported: Usage | None = None, text: str = "", pieces: int = 0) -> None:
        """Charge ``attempt`` what its provider billed without answering (a hedge loser, a broken stream).

        The provider's own count when it sent one before the call ended; otherwise our
        estimate (the prompt plus ``text``, the output it had streamed), flagged as such.
        """
        if reported is not None and usage_total(reported) > 0:
            attempt.usage = reported
            return
        attempt.usage = estimated_usage(self.request, text, pieces)
        attempt.usage_estimated = True

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
