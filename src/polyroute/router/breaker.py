"""A circuit breaker for one deployment (provider + model + key).

A deployment that keeps failing is not called again until a cooldown has passed; then one
probe call at a time is let through (half-open) and its outcome closes or re-opens the
circuit. Rejections are instant, so a dead provider costs its callers nothing but a skipped
attempt. The breaker is a plain state machine over a caller-supplied clock: no locks, no
tasks, no sleeping, which keeps the hot path cheap and the tests deterministic.

Only failures that say something about the deployment count (see :func:`counts_against`);
a bad request says something about the request. An authentication failure is a state of
its own, ``auth_failed``: nothing but a new key can fix it, so no cooldown ever ends it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from polyroute import errors

__all__ = ["CALL", "PROBE", "REJECT", "BreakerSettings", "BreakerState", "CircuitBreaker", "Verdict", "classify"]

BreakerState = Literal["closed", "open", "half_open", "auth_failed"]
Verdict = Literal["failure", "auth", "neutral"]

#: what :meth:`CircuitBreaker.allow` answers
REJECT, CALL, PROBE = 0, 1, 2


_FAILURES = (
    errors.ProviderUnavailableError,
    errors.RateLimitedError,
    errors.TimeoutError,
    errors.StreamInterruptedError,
)


def classify(exc: BaseException) -> Verdict:
    """What an error says about the deployment that raised it.

    ``failure``: it is down, slow, overloaded or broke a stream. ``auth``: its credential is
    refused. ``neutral``: the request was at fault, or we gave up ourselves (queue timeout,
    cancellation), so the deployment's record should not change.
    """
    if isinstance(exc, (errors.AuthenticationError, errors.PermissionDeniedError)):
        return "auth"
    if isinstance(exc, errors.CapacityError):
        return "neutral"
    if isinstance(exc, _FAILURES):
        return "failure"
    return "neutral"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    #: open after this many failures in a row
    failure_threshold: int = 5
    #: ... or when at least this share of the calls in the window failed
    failure_rate: float = 0.5
    #: sliding window for the failure rate, seconds
    window: float = 60.0
    #: the failure rate is only trusted over at least this many calls in the window
    min_requests: int = 10
    #: how long an open circuit rejects calls before a probe, seconds
    cooldown: float = 30.0
    #: longest cooldown accepted from a provider's Retry-After
    max_cooldown: float = 300.0
    #: a 429/503 carrying Retry-After opens the circuit for that long at once
    open_on_retry_after: bool = True
    #: set False to turn breaking off (the state is still tracked for health)
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.min_requests < 1:
            raise ValueError("breaker failure_threshold and min_requests must be at least 1")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("breaker failure_rate must be in (0, 1]")
        if self.window <= 0 or self.cooldown < 0 or self.max_cooldown < self.cooldown:
            raise ValueError("breaker window must be positive and 0 <= cooldown <= max_cooldown")


class CircuitBreaker:
    """closed -> open -> half_open -> closed (or back to open); plus ``auth_failed``.

    Invariants (checked by property tests): at most one probe is admitted while half-open,
    and re-opening never moves ``open_until`` earlier than it already was.
    """

    __slots__ = ("_outcomes", "consecutive", "last_error", "open_until", "opened", "probing", "settings", "state")

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self.settings = settings or BreakerSettings()
        self.state: BreakerState = "closed"
        self.open_until = 0.0
        self.consecutive = 0
        self.probing = False
        self.opened = 0
        self.last_error: str | None = None
        self._outcomes: deque[tuple[float, bool]] = deque()

    # ------------------------------------------------------------------ admission

    def allow(self, now: float) -> int:
        """May a call go to this deployment now? 0: no, :data:`CALL`: yes, :data:`PROBE`: yes, as the probe.

        The caller hands ``probe=True`` back with the outcome of a probe, so only the probe
        itself can free the half-open slot (a slow call admitted earlier cannot).
        """
        state = self.state
        if state == "closed" or not self.settings.enabled:
            return CALL
        if state == "auth_failed":
            return REJECT
        if state == "open":
            if now < self.open_until:
                return REJECT
            self.state = "half_open"
        if self.probing:
            return REJECT
        self.probing = True
        return PROBE

    def probe_due(self, now: float) -> bool:
        """Would :meth:`allow` hand out the probe now? (Without taking it.)"""
        if not self.settings.enabled or self.probing:
            return False
        return self.state == "half_open" or (self.state == "open" and now >= self.open_until)

    def retry_in(self, now: float) -> float:
        """Seconds until an open circuit lets a probe through (0.0 when not open)."""
        return max(0.0, self.open_until - now) if self.state == "open" else 0.0

    # ------------------------------------------------------------------ outcomes

    def record_success(self, now: float, *, probe: bool = False) -> None:
        self._record(now, failed=False)
        self.consecutive = 0
        if probe:
            self.probing = False
        if self.state in ("open", "half_open"):
            self.state = "closed"

    def record_failure(self, now: float, error: BaseException, *, probe: bool = False) -> None:
        """Count ``error`` according to :func:`classify` and open the circuit if warranted."""
        verdict = classify(error)
        if probe:
            self.probing = False
        if verdict == "neutral":
            return
        self.last_error = type(error).__name__
        if verdict == "auth":
            self.state = "auth_failed"
            return
        self._record(now, failed=True)
        self.consecutive += 1
        advised = getattr(error, "retry_after", None)
        s = self.settings
        if self.state == "half_open":
            self._open(now, advised)
        elif self.state == "closed":
            told_to_wait = advised is not None and advised > 0 and s.open_on_retry_after
            if told_to_wait or self.consecutive >= s.failure_threshold or self._rate_exceeded(now):
                self._open(now, advised)
        elif self.state == "open":
            # a call admitted before the circuit opened failed late: only ever extend
            self._open(now, advised)

    def trip(self, now: float, error: BaseException, *, probe: bool = False) -> None:
        """Open now, whatever the counts say: a probe shared by every replica failed.

        One replica's probe speaks for all of them, so the circuit it was probing must open
        again here too, even on a replica whose own breaker had seen nothing. Neutral and
        auth errors are recorded as usual instead.
        """
        if classify(error) != "failure" or self.state == "auth_failed":
            self.record_failure(now, error, probe=probe)
            return
        if probe:
            self.probing = False
        self.last_error = type(error).__name__
        self._record(now, failed=True)
        self.consecutive += 1
        self._open(now, getattr(error, "retry_after", None))

    def release(self, now: float, *, probe: bool = False) -> None:
        """The admitted call ended saying nothing about the deployment (cancelled): free its probe."""
        if probe:
            self.probing = False

    def reset(self) -> None:
        """Forget everything (used when the deployment's key changes)."""
        self.state = "closed"
        self.open_until = 0.0
        self.consecutive = 0
        self.probing = False
        self.last_error = None
        self._outcomes.clear()

    # ------------------------------------------------------------------ window

    def error_rate(self, now: float) -> tuple[float, int]:
        """(share of failed calls, number of calls) within the window ending at ``now``."""
        self._prune(now)
        total = len(self._outcomes)
        if not total:
            return 0.0, 0
        return sum(1 for _, failed in self._outcomes if failed) / total, total

    def _record(self, now: float, *, failed: bool) -> None:
        self._outcomes.append((now, failed))
        if len(self._outcomes) > 4 * self.settings.min_requests + 64:
            self._prune(now)

    def _prune(self, now: float) -> None:
        horizon = now - self.settings.window
        outcomes = self._outcomes
        while outcomes and outcomes[0][0] < horizon:
            outcomes.popleft()
        while len(outcomes) > 4 * self.settings.min_requests + 64:
            outcomes.popleft()

    def _rate_exceeded(self, now: float) -> bool:
        self._prune(now)
        outcomes = self._outcomes
        if len(outcomes) < self.settings.min_requests:
            return False
        failed = sum(1 for _, f in outcomes if f)
        return failed / len(outcomes) >= self.settings.failure_rate

    def _open(self, now: float, advised: float | None) -> None:
        s = self.settings
        # the provider's own Retry-After is the cooldown when it gave one
        cooldown = min(advised, s.max_cooldown) if advised is not None and advised > 0 else s.cooldown
        # the later of the old and the new deadline: a short cooldown never cuts a long one
        self.open_until = max(self.open_until, now + cooldown)
        self.state = "open"
        self.opened += 1
