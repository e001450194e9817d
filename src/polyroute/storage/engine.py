"""Creating the async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg).

SQLite gets three things the driver does not do by default:

- ``journal_mode=WAL`` so readers never wait for the writer (and vice versa);
- ``busy_timeout`` so a writer waits for the lock instead of failing at once;
- explicit ``BEGIN`` statements (the driver's implicit transaction handling is switched
  off, as SQLAlchemy's documentation recommends), with ``BEGIN IMMEDIATE`` on connections
  flagged for writing. A deferred transaction that reads and then writes can fail with
  ``SQLITE_BUSY`` when another writer got in between; taking the write lock up front makes
  writers queue instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

__all__ = ["WRITE", "create_engine", "is_postgres", "normalize_url"]

#: execution option marking a connection whose transactions write (``BEGIN IMMEDIATE`` on SQLite)
WRITE = "polyroute_write"

_SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Pick the async driver for a plain URL: ``postgresql://`` -> ``postgresql+asyncpg://``."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url[len(plain) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def _is_memory(database: str | None) -> bool:
    return not database or database == ":memory:" or "mode=memory" in database


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, **kw: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` with the settings this project relies on."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        if _is_memory(parsed.database):
            # One shared connection: every new connection to ":memory:" is a new, empty database.
            kw.setdefault("poolclass", StaticPool)
        engine = create_async_engine(parsed, **kw)
        _configure_sqlite(engine)
        return engine
    kw.setdefault("pool_pre_ping", True)
    return create_async_engine(parsed, pool_size=pool_size, max_overflow=max_overflow, **kw)


def _configure_sqlite(engine: AsyncEngine) -> None:
    memory = _is_memory(engine.url.database)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level; SQLAlchemy's "begin" hook below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")
