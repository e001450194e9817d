"""Token buckets: our own side of a deployment's rpm/tpm limits, and the hedging budget.

Enforcing a provider's limits locally means a burst waits (or goes elsewhere) here instead
of collecting 429s upstream, which with several replicas would multiply. Buckets take the
current time as an argument so that callers (and tests) own the clock.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` tokens per second.

    :meth:`wait` says how long until ``n`` tokens are there, without taking them, so a
    caller can decide to wait or to go elsewhere; :meth:`take` then debits them. The level
    may go negative through :meth:`adjust` (an estimate that turned out low), which simply
    delays the next caller.
    """

    __slots__ = ("_level", "_stamp", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, *, now: float = 0.0, full: bool = True) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = rate
        self.capacity = capacity
        self._level = capacity if full else 0.0
        self._stamp = now

    @classmethod
    def per_minute(cls, limit: float, *, now: float = 0.0, burst: float = 1.0) -> TokenBucket:
        """A bucket for an rpm or tpm limit, refilled evenly, holding ``burst`` seconds' worth.

        Providers quantize their per-minute limits (a 600 rpm limit is enforced as about 10
        per second), so sending a whole minute's allowance at once would only buy 429s.
        """
        rate = limit / 60.0
        return cls(rate, max(1.0, rate * burst), now=now)

    def level(self, now: float) -> float:
        if now > self._stamp:
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._level

    def wait(self, n: float, now: float) -> float:
        """Seconds until ``n`` tokens are available (0.0: now). ``n`` is capped at capacity."""
        missing = min(n, self.capacity) - self.level(now)
        return missing / self.rate if missing > 0 else 0.0

    def take(self, n: float, now: float) -> bool:
        """Debit ``n`` tokens if they are there; False (and nothing taken) otherwise."""
        n = min(n, self.capacity)
        if self.level(now) < n:
            return False
        self._level -= n
        return True

    def adjust(self, n: float, now: float) -> None:
        """Debit (positive) or credit (negative) ``n`` tokens after the fact."""
        self._level = min(self.capacity, self.level(now) - n)
