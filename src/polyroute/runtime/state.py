"""The runtime's shared state: router, settings, database, and the tasks it must not lose.

One :class:`Runtime` lives on ``app.state.runtime`` for the app's lifetime. It knows which
background tasks are running (stream producers and their final writes) so that shutdown can
end streams first, then wait for their writes, then close the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from starlette.requests import Request

from polyroute.router import Router
from polyroute.runtime.errors import Redactor
from polyroute.runtime.settings import ServerSettings
from polyroute.storage import Database, SessionLocks, Store

__all__ = ["Runtime", "runtime_of"]

logger = logging.getLogger("polyroute.runtime")

T = TypeVar("T")


class Runtime:
    def __init__(self, router: Router, settings: ServerSettings, *, disabled_providers: Sequence[str] = ()) -> None:
        self.router = router
        self.settings = settings
        self.disabled = frozenset(disabled_providers)
        self.database = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            lock_pool_size=settings.db_lock_pool_size,
            lock_timeout=settings.session_lock_timeout,
        )
        self.redactor = Redactor(
            [*settings.api_keys, *(getattr(p, "api_key", None) for p in router.providers.values())]
        )
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams: set[asyncio.Task[Any]] = set()

    @property
    def store(self) -> Store:
        return self.database.store

    @property
    def locks(self) -> SessionLocks:
        return self.database.locks

    def spawn(self, coro: Coroutine[Any, Any, T], *, stream: bool = False) -> asyncio.Task[T]:
        """Run ``coro`` as a tracked task; ``stream`` tasks are cancelled when shutdown begins."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._reap)
        if stream:
            self._streams.add(task)
            task.add_done_callback(self._streams.discard)
        if self.closing and stream:
            task.cancel()
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        """Retrieve a failed task's exception ourselves: asyncio would log it with a traceback."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error(
                "background task failed: %s", type(exc).__name__, exc_info=exc if self.settings.debug else None
            )

    def begin_shutdown(self) -> None:
        """Stop open streams (each ends with an ``error`` event and stores what it has)."""
        if self.closing:
            return
        self.closing = True
        if self._streams:
            logger.info("ending %d open stream(s) for shutdown", len(self._streams))
        for task in list(self._streams):
            task.cancel()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for tracked tasks, then cancel what is left."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("cancelled %d task(s) still running after %.1fs", len(pending), grace)
            await asyncio.wait(pending, timeout=1.0)

    async def start(self) -> None:
        await self.database.open()

    async def stop(self) -> None:
        self.begin_shutdown()
        try:
            await self.drain(self.settings.shutdown_grace_seconds)
        finally:
            try:
                await self.router.aclose()
            finally:
                await self.database.close()


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
