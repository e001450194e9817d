"""Serializing the turns of one session, within a process and across processes.

A turn (read history -> call the model -> store the user message and the reply) must not
overlap another turn of the same session, or two replies would be computed from the same
history and their messages would interleave. The model call can take a minute, so the lock
cannot be a database transaction (holding one open that long pins a pooled connection and,
on PostgreSQL, keeps row locks and an "idle in transaction" backend around).

Two layers:

1. **In-process:** one :class:`asyncio.Lock` per session id (created on demand, dropped when
   nobody holds or waits for it). Concurrent requests for one session in one process queue
   here and cost nothing else.
2. **Across processes (PostgreSQL only):** a session-level ``pg_advisory_lock`` keyed by a
   64-bit hash of the session id, taken on a *dedicated* connection from a small separate
   pool in autocommit mode, so no transaction is open while it is held and the main pool is
   never drained by waiting turns. The server blocks the waiter (no polling); ``lock_timeout``
   bounds the wait; if the process dies the connection drops and PostgreSQL frees the lock.
   Because of layer 1, each process holds at most one such connection per busy session.

SQLite has no cross-process story here: it is the single-process default, and its
``BEGIN IMMEDIATE`` writes keep the stored sequence consistent regardless.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from polyroute.storage.engine import create_engine, is_postgres
from polyroute.storage.records import SessionBusyError, StorageBusyError

__all__ = ["SessionLocks", "advisory_key"]

#: SQLSTATE 55P03 lock_not_available: raised when ``lock_timeout`` expires
_LOCK_NOT_AVAILABLE = "55P03"


def advisory_key(session_id: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` (collisions only cost extra waiting)."""
    return int.from_bytes(
        hashlib.blake2b(session_id.encode(), digest_size=8, person=b"polyroute").digest(), "big", signed=True
    )


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class SessionLocks:
    """``async with locks.hold(session_id):`` serializes turns of one session."""

    def __init__(self, engine: AsyncEngine, *, timeout: float = 120.0, pool_size: int = 20) -> None:
        self.timeout = timeout
        self._entries: dict[str, _Entry] = {}
        self._lock_engine: AsyncEngine | None = None
        if is_postgres(engine):
            self._lock_engine = create_engine(
                engine.url.render_as_string(hide_password=False),
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=timeout,
                isolation_level="AUTOCOMMIT",
                connect_args={"server_settings": {"lock_timeout": str(max(1, int(timeout * 1000)))}},
            )

    @property
    def cross_process(self) -> bool:
        return self._lock_engine is not None

    def busy(self, session_id: str) -> bool:
        """True while some turn of this session holds or waits for the in-process lock."""
        entry = self._entries.get(session_id)
        return entry is not None and entry.users > 0

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        entry = self._entries.get(session_id)
        if entry is None:
            entry = self._entries[session_id] = _Entry()
        entry.users += 1
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    await entry.lock.acquire()
            except TimeoutError:
                raise self._busy() from None
            try:
                if self._lock_engine is None:
                    yield
                else:
                    async with self._advisory(self._lock_engine, session_id):
                        yield
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._entries.pop(session_id, None)

    def _busy(self) -> SessionBusyError:
        return SessionBusyError(
            f"another message to this session is still being answered (waited {self.timeout:g}s)",
            retry_after=max(1.0, self.timeout / 10),
        )

    @asynccontextmanager
    async def _advisory(self, engine: AsyncEngine, session_id: str) -> AsyncIterator[None]:
        key = advisory_key(session_id)
        try:
            conn = await engine.connect()
        except sa_exc.TimeoutError:
            raise StorageBusyError("too many sessions are being answered at once", retry_after=1.0) from None
        try:
            await self._lock(conn, key)
        except BaseException:
            await _discard(conn)
            raise
        try:
            yield
        finally:
            try:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except BaseException:
                await _discard(conn)  # the lock dies with the connection
                raise
            await conn.close()

    async def _lock(self, conn: AsyncConnection, key: int) -> None:
        try:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        except sa_exc.DBAPIError as exc:
            if _sqlstate(exc) == _LOCK_NOT_AVAILABLE:
                raise self._busy() from None
            raise

    async def aclose(self) -> None:
        if self._lock_engine is not None:
            await self._lock_engine.dispose()


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    orig = exc.orig
    for attr in ("sqlstate", "pgcode"):
        value = getattr(orig, attr, None) or getattr(getattr(orig, "__cause__", None), attr, None)
        if isinstance(value, str):
            return value
    return None


async def _discard(conn: AsyncConnection) -> None:
    """Drop a connection whose state is unknown, so that no lock can outlive the turn."""
    try:
        await conn.invalidate()
        await conn.close()
    except Exception:
        pass
