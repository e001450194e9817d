"""Ordering the deployments of one alias by the alias's strategy.

The balancer only reorders: the first deployment it returns gets the call, the others stay
behind it as fallbacks, so a balanced group keeps every guarantee of a fallback chain.
It reads the deployment table (latency, in-flight, prices) but never changes it.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Protocol

from polyroute.router.deployments import DeploymentState, DeploymentTable
from polyroute.router.policy import RoutingPolicy, ref_key
from polyroute.types import ModelSpec, Usage

__all__ = ["Balancer", "PriceBook", "stable_fraction"]


class PriceBook(Protocol):
    """Anything that prices a call's usage (see :class:`polyroute.pricing.PriceTable`)."""

    def cost_of(self, usage: Usage, provider: str, model: str) -> float | None: ...

#: output tokens assumed for a cost estimate when the request sets no max_tokens
DEFAULT_OUTPUT_TOKENS = 256


def stable_fraction(text: str) -> float:
    """A number in [0, 1) that depends only on ``text`` (same session -> same deployment)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def weighted_pick(weights: Sequence[float], u: float) -> int:
    """The index whose cumulative-weight interval contains ``u * total``; -1 if all are 0."""
    total = sum(weights)
    if total <= 0:
        return -1
    target = u * total
    acc = 0.0
    last = -1
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        acc += w
        last = i
        if target < acc:
            return i
    return last


class Balancer:
    """Orders an alias's group; one per router, holding only the random source."""

    __slots__ = ("rng", "table")

    def __init__(self, table: DeploymentTable, rng: random.Random | None = None) -> None:
        self.table = table
        self.rng = rng or random.Random()

    def order(
        self,
        alias: str,
        policy: RoutingPolicy,
        entries: list[ModelSpec],
        *,
        session: str | None = None,
        streaming: bool = False,
        prompt_tokens: int = 0,
        output_tokens: int | None = None,
        prices: PriceBook | None = None,
    ) -> list[ModelSpec]:
        """The group in the order the strategy picks, then the fallbacks; ``prices`` (the
        router's price table) prices ``lowest_cost`` members that name no price of their own."""
        group, rest = policy.group(entries)
        if len(group) < 2:
            return [*group, *rest]
        strategy = policy.strategy
        if strategy == "weighted":
            u = stable_fraction(f"{alias}\x00{session}") if policy.sticky and session else self.rng.random()
            pick = weighted_pick([policy.weight_of(e) for e in group], u)
            if pick > 0:
                group = [group[pick], *group[:pick], *group[pick + 1 :]]
            return [*group, *rest]
        states = [self._state(e) for e in group]
        if strategy == "least_in_flight":
            scores = [float(s.in_flight) if s is not None else 0.0 for s in states]
        elif strategy == "lowest_latency":
            scores = [self._latency(s, streaming) for s in states]
        else:
            out = output_tokens or DEFAULT_OUTPUT_TOKENS
            scores = [self._cost(s, e, prompt_tokens, out, prices) for s, e in zip(states, group, strict=True)]
        ranked = sorted(range(len(group)), key=scores.__getitem__)  # stable: ties keep config order
        return [*(group[i] for i in ranked), *rest]

    def _state(self, spec: ModelSpec) -> DeploymentState | None:
        key = ref_key(spec)
        return self.table.peek(*key) if key is not None else None

    @staticmethod
    def _latency(state: DeploymentState | None, streaming: bool) -> float:
        """EWMA time to first token (streams) or latency; unmeasured sorts first, to be measured."""
        if state is None:
            return 0.0
        stats = state.ttft if streaming and state.ttft.ewma is not None else state.latency
        return stats.ewma if stats.ewma is not None else 0.0

    @staticmethod
    def _cost(
        state: DeploymentState | None,
        spec: ModelSpec,
        prompt_tokens: int,
        output_tokens: int,
        prices: PriceBook | None,
    ) -> float:
        """Estimated price of the call: the member's own prices, else the price table's; unpriced sorts last."""
        if state is not None and (state.input_price is not None or state.output_price is not None):
            return ((state.input_price or 0.0) * prompt_tokens + (state.output_price or 0.0) * output_tokens) / 1e6
        key = ref_key(spec)
        if prices is None or key is None:
            return math.inf
        usage = Usage.model_construct(
            prompt_tokens=prompt_tokens,
            completion_tokens=output_tokens,
            total_tokens=prompt_tokens + output_tokens,
            cached_tokens=0,
            reasoning_tokens=0,
        )
        cost = prices.cost_of(usage, *key)
        return math.inf if cost is None else cost
