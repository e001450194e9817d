"""Sharing a few thread-bound resources (llama contexts) between event loops and worker threads.

In-process models need two things asyncio does not give directly: a pool whose waiters live on
*any* event loop (a provider outlives the loops of ``SyncRouter``, of tests and of servers,
while ``asyncio.Semaphore`` binds to the first loop that waits on it) and that a worker thread
can release into; and a way to run a job in a thread that is certain to run, even when its
caller is cancelled, because the job's ``finally`` is what gives the resource back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from polyroute import errors

__all__ = ["ResourcePool", "run_in_thread"]

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class _Waiter(Generic[T]):
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    item: T | None = None


def _wake(waiter: _Waiter[Any]) -> None:
    if not waiter.future.done():
        waiter.future.set_result(waiter.item)


def _close_item(item: object) -> None:
    close = getattr(item, "close", None)
    if close is not None:
        close()


class ResourcePool(Generic[T]):
    """Hand out a fixed set of items, each to one caller at a time, first come first served.

    Waiting happens on the caller's event loop (no thread is parked), is bounded by
    ``max_waiting`` and by a deadline, and ends in :class:`~polyroute.errors.CapacityError`.
    Handing an item to a waiter is recorded under the lock, so a waiter that times out or is
    cancelled at that very moment gives the item back instead of losing it.
    """

    def __init__(self, items: list[T], max_waiting: int) -> None:
        self.size = len(items)
        self.max_waiting = max_waiting
        self._free = list(items)
        self._waiters: deque[_Waiter[T]] = deque()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def in_use(self) -> int:
        return self.size - len(self._free)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, max_wait: float | None, what: str, **where: Any) -> T:
        """An item, waiting at most ``max_wait`` seconds; ``where`` goes into any error raised."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise errors.ProviderUnavailableError(f"{what} was closed", **where)
            if self._free:
                return self._free.pop()
            if len(self._waiters) >= self.max_waiting:
                raise errors.CapacityError(f"{what} is busy and {self.max_waiting} calls already wait for it", **where)
            waiter: _Waiter[T] = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max_wait):
                return await waiter.future
        except BaseException as exc:
            with self._lock:
                handed = waiter.item
                if handed is None:
                    self._waiters.remove(waiter)
            if handed is not None:
                self.release(handed)
            if isinstance(exc, TimeoutError):
                raise errors.CapacityError(
                    f"{what} stayed busy for {max_wait:.3g}s (all {self.size} in use)", **where
                ) from None
            raise

    def release(self, item: T) -> None:
        """Give ``item`` back (to the longest waiter, if any); callable from any thread."""
        with self._lock:
            while self._waiters and not self._closed:
                waiter = self._waiters.popleft()
                waiter.item = item
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter)
                    return
                except RuntimeError:  # that waiter's loop is closed; try the next one
                    waiter.item = None
            if not self._closed:
                self._free.append(item)
                return
        _close_item(item)

    def close(self) -> None:
        """Close idle items now; items in use are closed when they come back."""
        with self._lock:
            self._closed = True
            idle, self._free = self._free, []
        for item in idle:
            _close_item(item)


async def run_in_thread(fn: Callable[[], T], *, name: str = "polyroute-worker") -> T:
    """Run ``fn`` in a new daemon thread that is sure to run it to the end.

    ``asyncio.to_thread`` may drop a job that has not started yet when its caller is
    cancelled; a job that releases a pooled resource in its ``finally`` must never be dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(), None)
        except BaseException as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future
