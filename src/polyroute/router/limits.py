"""Concurrency slots with a bounded wait.

A call that cannot get a slot waits, but never longer than its own deadline: an unbounded
queue would turn a traffic spike into a pile of requests that all time out late.
"""

from __future__ import annotations

import asyncio

from polyroute.errors import CapacityError

__all__ = ["Limiter"]


class Limiter:
    """An ``asyncio.Semaphore`` that records how busy it is and gives up at a deadline."""

    __slots__ = ("_sem", "in_flight", "limit", "name", "peak", "waiting")

    def __init__(self, limit: int, name: str) -> None:
        if limit < 1:
            raise ValueError(f"concurrency limit for {name} must be at least 1, got {limit}")
        self.limit = limit
        self.name = name
        self._sem = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.peak = 0
        self.waiting = 0

    async def acquire(self, deadline: float, *, provider: str | None = None, model: str | None = None) -> None:
        """Take a slot, waiting at most until ``deadline`` (an event-loop time)."""
        if self._sem.locked():
            self.waiting += 1
            try:
                async with asyncio.timeout_at(deadline):
                    await self._sem.acquire()
            except TimeoutError:
                raise CapacityError(
                    f"no free slot in {self.name} (limit {self.limit}) before the deadline",
                    provider=provider,
                    model=model,
                ) from None
            finally:
                self.waiting -= 1
        else:
            await self._sem.acquire()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def release(self) -> None:
        self.in_flight -= 1
        self._sem.release()
