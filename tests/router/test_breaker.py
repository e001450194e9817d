"""The circuit breaker as a state machine over an explicit clock (no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from polyroute import errors
from polyroute.router.breaker import PROBE, BreakerSettings, CircuitBreaker, classify


def down() -> errors.ProviderUnavailableError:
    return errors.ProviderUnavailableError("down", status=503)


def test_opens_after_consecutive_failures_and_rejects_until_cooldown() -> None:
    b = CircuitBreaker(BreakerSettings(failure_threshold=3, cooldown=10))
    for t in range(2):
        assert b.allow(t)
        b.record_failure(t, down())
    assert b.state == "closed"
    b.record_failure(2, down())
    assert b.state == "open" and b.open_until == 12
    assert not b.allow(11.9)
    assert b.retry_in(11) == pytest.approx(1)


def test_half_open_admits_one_probe_then_closes_on_success() -> None:
    b = CircuitBreaker(BreakerSettings(failure_threshold=1, cooldown=5))
    b.record_failure(0, down())
    assert b.allow(5) == PROBE and b.state == "half_open"
    assert not b.allow(5.1)  # the probe is in flight
    b.record_success(6, probe=True)
    assert b.state == "closed" and b.allow(6) and b.allow(6)


def test_failed_probe_reopens_and_a_neutral_one_frees_the_slot() -> None:
    b = CircuitBreaker(BreakerSettings(failure_threshold=1, cooldown=5))
    b.record_failure(0, down())
    assert b.allow(5) == PROBE
    b.record_failure(5, errors.BadRequestError("bad"), probe=True)  # says nothing about the deployment
    assert b.state == "half_open" and b.allow(5) == PROBE
    b.record_failure(6, down(), probe=True)
    assert b.state == "open" and b.open_until == 11


def test_a_failed_shared_probe_trips_a_closed_breaker_at_once_but_never_shortens_it() -> None:
    b = CircuitBreaker(BreakerSettings(failure_threshold=5, cooldown=5))
    assert not b.probe_due(0)
    b.trip(0, down())  # another replica's circuit: this breaker saw nothing before
    assert (b.state, b.open_until, b.consecutive) == ("open", 5, 1)
    assert not b.probe_due(4.9) and b.probe_due(5)
    b.trip(1, errors.RateLimitedError("rl", retry_after=60))
    b.trip(2, down())  # a shorter cooldown keeps the later deadline
    assert b.open_until == 61
    b.trip(3, errors.BadRequestError("bad"))  # neutral: counted as usual, not a trip
    assert b.open_until == 61 and b.consecutive == 3


def test_failure_rate_over_the_window_opens() -> None:
    b = CircuitBreaker(BreakerSettings(failure_threshold=100, failure_rate=0.5, min_requests=4, window=10))
    b.record_success(0)
    b.record_failure(1, down())
    b.record_success(2)
    assert b.state == "closed"
    b.record_failure(3, down())  # 2 of 4 failed
    assert b.state == "open"


def test_old_calls_leave_the_window() -> None:
    b = CircuitBreaker(BreakerSettings(failure_threshold=100, failure_rate=0.5, min_requests=4, window=10))
    for t in range(3):
        b.record_failure(t, down())
        b.consecutive = 0
    assert b.error_rate(5) == (1.0, 3)
    assert b.error_rate(100) == (0.0, 0)
    b.record_failure(100, down())
    assert b.state == "closed"  # one failure in the window is below min_requests


def test_retry_after_is_the_cooldown_and_never_shortens_a_later_deadline() -> None:
    b = CircuitBreaker(BreakerSettings(cooldown=30, max_cooldown=120))
    b.record_failure(0, errors.RateLimitedError("rl", status=429, retry_after=7))
    assert b.state == "open" and b.open_until == 7
    b.record_failure(1, errors.RateLimitedError("rl", status=429, retry_after=500))
    assert b.open_until == 121  # capped at max_cooldown
    b.record_failure(2, errors.RateLimitedError("rl", status=429, retry_after=1))
    assert b.open_until == 121  # the later of the old and the new deadline


def test_auth_failure_is_sticky_until_reset() -> None:
    b = CircuitBreaker(BreakerSettings(cooldown=1))
    b.record_failure(0, errors.AuthenticationError("bad key", status=401))
    assert b.state == "auth_failed"
    assert not b.allow(10_000)
    b.reset()
    assert b.allow(10_000)


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (down(), "failure"),
        (errors.RateLimitedError("rl"), "failure"),
        (errors.TimeoutError("t", kind="first_token"), "failure"),
        (errors.StreamInterruptedError("s"), "failure"),
        (errors.AuthenticationError("a"), "auth"),
        (errors.PermissionDeniedError("p"), "auth"),
        (errors.BadRequestError("b"), "neutral"),
        (errors.ContextLengthExceededError("c"), "neutral"),
        (errors.ContentFilteredError("f"), "neutral"),
        (errors.CapacityError("queue"), "neutral"),
    ],
)
def test_only_deployment_faults_count(error: errors.PolyrouteError, verdict: str) -> None:
    assert classify(error) == verdict


class BreakerMachine(RuleBasedStateMachine):
    """Random calls, outcomes and clock steps; the invariants must hold throughout."""

    def __init__(self) -> None:
        super().__init__()
        config = BreakerSettings(failure_threshold=2, failure_rate=0.5, min_requests=3, cooldown=5, window=20)
        self.b = CircuitBreaker(config)
        self.now = 0.0
        self.inflight: list[bool] = []  # admitted, unfinished calls: was each a half-open probe?
        self.last_open_until = 0.0

    @rule(dt=st.floats(min_value=0, max_value=8, allow_nan=False))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def call(self) -> None:
        was = self.b.state
        due = self.b.probe_due(self.now)
        ticket = self.b.allow(self.now)
        assert due == (ticket == PROBE), "probe_due must predict exactly when allow() hands out the probe"
        if ticket:
            self.inflight.append(ticket == PROBE)
        elif was == "closed":
            raise AssertionError("a closed breaker rejected a call")

    @precondition(lambda self: bool(self.inflight))
    @rule(
        which=st.integers(min_value=0),
        outcome=st.sampled_from(["ok", "down", "429", "bad", "cancel", "shared_probe_failed", "auth"]),
        retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=50, allow_nan=False)),
    )
    def finish(self, which: int, outcome: str, retry_after: float | None) -> None:
        probe = self.inflight.pop(which % len(self.inflight))
        if outcome == "ok":
            self.b.record_success(self.now, probe=probe)
        elif outcome == "down":
            self.b.record_failure(self.now, down(), probe=probe)
        elif outcome == "429":
            self.b.record_failure(self.now, errors.RateLimitedError("rl", retry_after=retry_after), probe=probe)
        elif outcome == "cancel":
            self.b.release(self.now, probe=probe)
        elif outcome == "shared_probe_failed":
            before = self.b.state
            self.b.trip(self.now, errors.RateLimitedError("rl", retry_after=retry_after), probe=probe)
            assert self.b.state == ("auth_failed" if before == "auth_failed" else "open")
        elif outcome == "auth":
            self.b.record_failure(self.now, errors.AuthenticationError("key"), probe=probe)
            assert self.b.state == "auth_failed"
        else:
            self.b.record_failure(self.now, errors.BadRequestError("bad"), probe=probe)

    @invariant()
    def at_most_one_probe(self) -> None:
        assert sum(self.inflight) <= 1  # never two probes at once, in any state

    @invariant()
    def open_deadline_never_moves_earlier(self) -> None:
        assert self.b.open_until >= self.last_open_until
        self.last_open_until = self.b.open_until

    @invariant()
    def open_means_rejecting_until_the_deadline(self) -> None:
        if self.b.state == "open" and self.now < self.b.open_until:
            assert self.b.retry_in(self.now) > 0


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase
