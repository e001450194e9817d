"""Read-only queries for operator tooling (``polyroute check``), across every owner.

The runtime's :class:`~polyroute.storage.store.Store` scopes every query to one owner, as an
API caller must be. An operator checking a deployment needs the opposite: every agent,
whoever created it. This module never writes and never creates anything: pointed at a
database that does not exist yet it says so (``None``) instead of creating an empty one,
which opening a :class:`~polyroute.storage.Database` would do.

The records still carry ``owner_hash`` (they are the store's records); callers that print
them must leave it out.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from polyroute.storage.engine import create_engine, normalize_url
from polyroute.storage.records import AgentRecord
from polyroute.storage.schema import agents
from polyroute.storage.store import _agent

__all__ = ["all_agents"]


def _sqlite_missing(url: str) -> bool:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    return database in ("", ":memory:") or "mode=memory" in database or not Path(database).is_file()


def _has_agents_table(conn: Connection) -> bool:
    return sa.inspect(conn).has_table(agents.name)


async def all_agents(url: str) -> list[AgentRecord] | None:
    """Every agent of every owner, oldest id first; ``None`` when the database is not created yet."""
    url = normalize_url(url)
    if _sqlite_missing(url):
        return None
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(_has_agents_table):
                return None
            rows = await conn.execute(sa.select(agents).order_by(agents.c.id))
            return [_agent(row._mapping) for row in rows]
    finally:
        await engine.dispose()
