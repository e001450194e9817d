"""What the router remembers about each deployment: breaker, latency, load, limits, key.

A deployment is one provider registration + one model + the key it is called with. The key
is tracked by identity of the provider's ``api_key`` attribute (and reported as a short
hash, never the key): when it changes, an ``auth_failed`` deployment is given a fresh start,
which is how "skip until its key changes" ends without anyone calling a reset.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from polyroute.router.breaker import BreakerSettings, CircuitBreaker
from polyroute.router.health import DeploymentHealth, LatencyStats
from polyroute.router.policy import Deployment
from polyroute.router.ratelimit import TokenBucket

__all__ = ["DeploymentState", "DeploymentTable", "key_id"]

log = logging.getLogger("polyroute.router")

_UNSET: Any = object()


def key_id(key: object) -> str | None:
    """A short, stable fingerprint of a credential: enough to tell keys apart, useless to use one."""
    if not isinstance(key, str) or not key:
        return None
    return hashlib.sha256(key.encode()).hexdigest()[:10]


class DeploymentState:
    __slots__ = (
        "_key_obj",
        "breaker",
        "calls",
        "failures",
        "in_flight",
        "input_price",
        "key_id",
        "latency",
        "model",
        "output_price",
        "provider",
        "rpm",
        "tpm",
        "ttft",
    )

    def __init__(self, provider: str, model: str, breaker: BreakerSettings | None) -> None:
        self.provider = provider
        self.model = model
        self.breaker = CircuitBreaker(breaker)
        self.calls = 0
        self.failures = 0
        self.in_flight = 0
        self.latency = LatencyStats()
        self.ttft = LatencyStats()
        self.rpm: TokenBucket | None = None
        self.tpm: TokenBucket | None = None
        self.input_price: float | None = None
        self.output_price: float | None = None
        self.key_id: str | None = None
        self._key_obj: object = _UNSET

    def configure(self, spec: Deployment, now: float) -> None:
        """Apply a group member's prices and our-side rpm/tpm limits."""
        self.input_price, self.output_price = spec.input_price, spec.output_price
        self.rpm = TokenBucket.per_minute(spec.rpm, now=now) if spec.rpm else None
        self.tpm = TokenBucket.per_minute(spec.tpm, now=now) if spec.tpm else None

    def check_key(self, key: object) -> None:
        """Notice a changed credential; a new key lifts an ``auth_failed`` state."""
        if key is self._key_obj:
            return
        first = self._key_obj is _UNSET
        self._key_obj = key
        new_id = key_id(key)
        if new_id == self.key_id and not first:
            return
        self.key_id = new_id
        if not first and self.breaker.state == "auth_failed":
            log.warning("%s:%s: the key changed; calling it again after its auth failure", self.provider, self.model)
            self.breaker.reset()

    def limit_wait(self, tokens: float, now: float) -> float:
        """Seconds until our rpm/tpm limits admit one call of about ``tokens`` tokens."""
        wait = 0.0
        if self.rpm is not None:
            wait = self.rpm.wait(1, now)
        if self.tpm is not None:
            wait = max(wait, self.tpm.wait(tokens, now))
        return wait

    @property
    def shared_id(self) -> str:
        """This deployment's name in shared state: provider, model and key id (never the key)."""
        return f"{self.provider}:{self.model}:{self.key_id or '-'}"

    def take_limits(self, tokens: float, now: float) -> None:
        if self.rpm is not None:
            self.rpm.adjust(1, now)
        if self.tpm is not None:
            self.tpm.adjust(tokens, now)

    def snapshot(self, now: float, remote: tuple[str | None, float] = (None, 0.0)) -> DeploymentHealth:
        """This deployment right now; ``remote`` is what other replicas said (shared state)."""
        b = self.breaker
        rate, window = b.error_rate(now)
        state = b.state
        if state == "open" and now >= b.open_until:
            state = "half_open"
        return DeploymentHealth(
            provider=self.provider,
            model=self.model,
            key_id=self.key_id,
            state=state,
            retry_in=b.retry_in(now),
            consecutive_failures=b.consecutive,
            error_rate=rate,
            window_calls=window,
            calls=self.calls,
            failures=self.failures,
            in_flight=self.in_flight,
            latency_ewma=self.latency.ewma,
            latency_p50=self.latency.percentile(50),
            ttft_ewma=self.ttft.ewma,
            ttft_p50=self.ttft.percentile(50),
            last_error=b.last_error,
            opened=b.opened,
            remote_state=remote[0],
            remote_retry_in=remote[1],
        )


class DeploymentTable:
    """Deployment states by (provider registration name, model id), created on first use.

    Callers may name any model id, so the table is bounded: past ``max_size`` entries the
    oldest idle ones with nothing to remember (closed circuit, no configured limits or
    prices) are forgotten.
    """

    __slots__ = ("_states", "breaker", "clock", "max_size")

    def __init__(self, breaker: BreakerSettings | None, clock: Callable[[], float], *, max_size: int = 4096) -> None:
        self.breaker = breaker
        self.clock = clock
        self.max_size = max_size
        self._states: dict[tuple[str, str], DeploymentState] = {}

    def get(self, provider: str, model: str) -> DeploymentState:
        state = self._states.get((provider, model))
        if state is None:
            if len(self._states) >= self.max_size:
                self._evict()
            state = self._states[(provider, model)] = DeploymentState(provider, model, self.breaker)
        return state

    def _evict(self) -> None:
        idle = [
            key
            for key, s in self._states.items()
            if s.in_flight == 0
            and s.breaker.state == "closed"
            and s.rpm is None
            and s.tpm is None
            and s.input_price is None
            and s.output_price is None
        ]
        for key in idle[: max(1, len(self._states) // 4)]:
            del self._states[key]

    def peek(self, provider: str, model: str) -> DeploymentState | None:
        return self._states.get((provider, model))

    def __iter__(self) -> Iterator[DeploymentState]:
        return iter(self._states.values())
