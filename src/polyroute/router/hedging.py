"""Hedged requests: when to fire the second call, and how many we can afford.

A hedge trades a little extra load for a much shorter tail: if the first candidate has not
produced anything by the time most calls would have, a second candidate starts in parallel
and whichever produces first wins (the other is cancelled and its connection closed). The
budget keeps this from doubling traffic exactly when a provider is slow for everyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from polyroute.router.health import LatencyStats
from polyroute.router.policy import HedgePolicy

__all__ = ["HedgeBudget", "cancel_all", "hedge_delay"]


class HedgeBudget:
    """Credit earned per call (``ratio``), spent per hedge (1.0), capped at ``burst``.

    Over any run of calls the number of hedges is at most ``ratio * calls + 1``, which is
    the "at most 10% of calls" promise without any clock.
    """

    __slots__ = ("burst", "credit", "ratio")

    def __init__(self, ratio: float, burst: float = 5.0) -> None:
        self.ratio = ratio
        self.burst = burst
        self.credit = min(1.0, burst)

    def earn(self) -> None:
        credit = self.credit + self.ratio
        self.credit = credit if credit < self.burst else self.burst

    def spend(self) -> bool:
        if self.credit >= 1.0:
            self.credit -= 1.0
            return True
        return False


def hedge_delay(policy: HedgePolicy, stats: LatencyStats) -> float | None:
    """Seconds to wait for the first candidate before hedging, or None for "do not hedge"."""
    delay = policy.delay
    if policy.percentile is not None and len(stats) >= policy.min_samples:
        delay = stats.percentile(policy.percentile)
    if delay is None:
        return None
    return max(delay, policy.min_delay)


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has finished unwinding (connections closed)."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
