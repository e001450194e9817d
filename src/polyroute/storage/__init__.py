"""Persistent agents, sessions and messages: SQLite by default, PostgreSQL for many replicas.

:class:`Database` is the one object the runtime holds: it opens the engine, applies the
migrations, and exposes the :class:`~polyroute.storage.store.Store` (queries) and the
:class:`~polyroute.storage.locks.SessionLocks` (turn serialization).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from polyroute.storage.engine import create_engine, is_postgres, normalize_url
from polyroute.storage.locks import SessionLocks
from polyroute.storage.migrate import upgrade
from polyroute.storage.records import (
    AgentRecord,
    MessageRecord,
    NewMessage,
    SessionBusyError,
    SessionGoneError,
    SessionRecord,
    StorageBusyError,
    StorageError,
    Turn,
)
from polyroute.storage.store import Store

__all__ = [
    "AgentRecord",
    "Database",
    "MessageRecord",
    "NewMessage",
    "SessionBusyError",
    "SessionGoneError",
    "SessionLocks",
    "SessionRecord",
    "StorageBusyError",
    "StorageError",
    "Store",
    "Turn",
    "normalize_url",
]


class Database:
    """Engine + store + locks for one database URL; ``await open()`` before use, ``close()`` after."""

    def __init__(self, url: str, *, pool_size: int = 10, lock_pool_size: int = 20, lock_timeout: float = 120.0) -> None:
        self.url = normalize_url(url)
        self._pool_size = pool_size
        self._lock_pool_size = lock_pool_size
        self._lock_timeout = lock_timeout
        self._engine: AsyncEngine | None = None
        self._store: Store | None = None
        self._locks: SessionLocks | None = None

    @property
    def backend(self) -> str:
        return make_url(self.url).get_backend_name()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the database is not open")
        return self._store

    @property
    def locks(self) -> SessionLocks:
        if self._locks is None:
            raise RuntimeError("the database is not open")
        return self._locks

    async def open(self, *, migrate: bool = True) -> None:
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.url, pool_size=self._pool_size)
        try:
            if migrate:
                await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        self._store = Store(engine)
        self._locks = SessionLocks(engine, timeout=self._lock_timeout, pool_size=self._lock_pool_size)

    async def close(self) -> None:
        if self._locks is not None:
            await self._locks.aclose()
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = self._store = self._locks = None

    @property
    def is_postgres(self) -> bool:
        return self._engine is not None and is_postgres(self._engine)
