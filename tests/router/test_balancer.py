"""Balancer strategies, token buckets and the hedge budget, with hypothesis for the invariants."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from polyroute import errors
from polyroute.router.balancer import Balancer, stable_fraction, weighted_pick
from polyroute.router.breaker import BreakerSettings
from polyroute.router.deployments import DeploymentTable
from polyroute.router.health import LatencyStats
from polyroute.router.hedging import HedgeBudget, hedge_delay
from polyroute.router.policy import Deployment, HedgePolicy, RoutingPolicy
from polyroute.router.ratelimit import TokenBucket
from polyroute.types import ModelSpec


def table() -> DeploymentTable:
    return DeploymentTable(BreakerSettings(), clock=lambda: 0.0)


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=5).filter(lambda w: sum(w) > 0))
def test_weighted_split_converges_to_the_weights(weights: list[int]) -> None:
    names: list[ModelSpec] = [f"p{i}:m" for i in range(len(weights))]
    policy = RoutingPolicy(
        strategy="weighted", deployments=tuple(Deployment(n, weight=w) for n, w in zip(names, weights))
    )
    balancer = Balancer(table(), random.Random(1))
    n = 4000
    counts = dict.fromkeys(names, 0)
    for _ in range(n):
        counts[balancer.order("x", policy, names)[0]] += 1
    total = sum(weights)
    for name, weight in zip(names, weights):
        assert abs(counts[name] / n - weight / total) < 0.05
        if weight == 0:
            assert counts[name] == 0


@given(
    weights=st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=6),
    u=st.floats(min_value=0, max_value=0.999999),
)
def test_weighted_pick_never_picks_a_zero_weight(weights: list[float], u: float) -> None:
    i = weighted_pick(weights, u)
    if sum(weights) <= 0:
        assert i == -1
    else:
        assert weights[i] > 0


def test_stable_fraction_is_stable_and_spread() -> None:
    assert stable_fraction("s-1") == stable_fraction("s-1")
    values = [stable_fraction(f"s-{i}") for i in range(1000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.4 < sum(values) / len(values) < 0.6


class LeastInFlight(RuleBasedStateMachine):
    """Calls start and finish at random; the balancer must always pick a least-loaded deployment."""

    names: list[ModelSpec] = ["a:m", "b:m", "c:m"]

    def __init__(self) -> None:
        super().__init__()
        self.table = table()
        self.balancer = Balancer(self.table)
        self.policy = RoutingPolicy(strategy="least_in_flight")
        for name in self.names:
            self.table.get(*str(name).split(":"))

    @rule(i=st.integers(min_value=0, max_value=2))
    def finish(self, i: int) -> None:
        state = self.table.get(*str(self.names[i]).split(":"))
        state.in_flight = max(0, state.in_flight - 1)

    @rule()
    def start(self) -> None:
        first = self.balancer.order("x", self.policy, list(self.names))[0]
        self.table.get(*str(first).split(":")).in_flight += 1

    @invariant()
    def first_is_a_minimum(self) -> None:
        loads = {str(n): self.table.get(*str(n).split(":")).in_flight for n in self.names}
        first = str(self.balancer.order("x", self.policy, list(self.names))[0])
        assert loads[first] == min(loads.values())


LeastInFlight.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestLeastInFlight = LeastInFlight.TestCase


def test_ordered_and_ungrouped_entries_keep_their_order() -> None:
    balancer = Balancer(table())
    entries: list[ModelSpec] = ["a:m", "b:m", "fallback"]
    policy = RoutingPolicy(strategy="weighted", deployments=(Deployment("a:m", weight=0), Deployment("b:m", weight=1)))
    assert balancer.order("x", policy, entries) == ["b:m", "a:m", "fallback"]
    assert balancer.order("x", RoutingPolicy(), entries) == entries


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(min_value=0, max_value=5), st.integers(min_value=1, max_value=20)), max_size=40)
)
def test_token_bucket_never_admits_more_than_capacity_plus_refill(steps: list[tuple[float, int]]) -> None:
    bucket = TokenBucket(rate=2.0, capacity=10.0)
    now = taken = 0.0
    for dt, n in steps:
        now += dt
        wait = bucket.wait(n, now)
        if bucket.take(n, now):
            assert wait == 0
            taken += min(n, 10)
        else:
            assert wait > 0
    assert taken <= 10 + 2.0 * now + 1e-9


@given(calls=st.integers(min_value=0, max_value=500), ratio=st.floats(min_value=0, max_value=1))
def test_hedge_budget_caps_the_share_of_hedged_calls(calls: int, ratio: float) -> None:
    budget = HedgeBudget(ratio, burst=5)
    hedges = 0
    for _ in range(calls):
        budget.earn()
        hedges += budget.spend()
    assert hedges <= ratio * calls + 1 + 1e-9


def test_hedge_delay_from_a_percentile_once_there_are_samples() -> None:
    stats = LatencyStats()
    policy = HedgePolicy(percentile=90, min_samples=10, delay=2.0, min_delay=0.01)
    assert hedge_delay(policy, stats) == 2.0  # too few samples: the fixed delay
    for i in range(1, 11):
        stats.add(i / 10)
    assert hedge_delay(policy, stats) == pytest.approx(0.9)
    assert hedge_delay(HedgePolicy(percentile=90), LatencyStats()) is None
    with pytest.raises(ValueError, match="delay"):
        HedgePolicy()


def test_the_deployment_table_stays_bounded_but_keeps_what_matters() -> None:
    t = DeploymentTable(BreakerSettings(failure_threshold=1), clock=lambda: 0.0, max_size=8)
    t.get("p", "limited").configure(Deployment("p:limited", rpm=10), now=0.0)
    broken = t.get("p", "broken")
    broken.breaker.record_failure(0.0, errors.ProviderUnavailableError("down"))
    for i in range(100):
        t.get("p", f"m{i}")
    kept = {s.model for s in t}
    assert len(kept) <= 8 and {"limited", "broken", "m99"} <= kept
