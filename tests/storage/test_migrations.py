"""Alembic migrations: applied at start, idempotent, identical to the schema, safe to race."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from polyroute.storage import Database
from polyroute.storage.engine import create_engine
from polyroute.storage.migrate import VERSION_TABLE, current_revision, downgrade, head_revision, upgrade
from polyroute.storage.schema import metadata
from runtime.support import fresh_database, require_postgres


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it (a fresh one per test, also on PostgreSQL)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    require_postgres()
    with fresh_database() as url:
        yield url


def _diff(conn: sa.Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


async def test_migrations_create_exactly_the_schema(empty_url: str) -> None:
    engine = create_engine(empty_url)
    try:
        assert await current_revision(engine) is None
        await upgrade(engine)
        assert await current_revision(engine) == head_revision() == "0001"
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert tables == {"agents", "sessions", "messages", VERSION_TABLE}
        await upgrade(engine)  # a second start changes nothing
        assert await current_revision(engine) == "0001"
        await downgrade(engine, "base")
        async with engine.connect() as conn:
            assert await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names())) == {VERSION_TABLE}
    finally:
        await engine.dispose()


async def test_replicas_starting_together_migrate_once(empty_url: str) -> None:
    databases = [Database(empty_url) for _ in range(3)]
    await asyncio.gather(*(d.open() for d in databases))
    try:
        owner = "o"
        agent = await databases[0].store.create_agent(
            owner, name="a", description=None, model="a:b", tools=[], config={}
        )
        assert await databases[2].store.get_agent(owner, agent.id) == agent
    finally:
        await asyncio.gather(*(d.close() for d in databases))


async def test_sqlite_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'sub' / 'dir' / 'p.db'}")
    await database.open()  # creates the directory
    try:
        async with database.store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await database.close()
    assert (tmp_path / "sub" / "dir" / "p.db").exists()
