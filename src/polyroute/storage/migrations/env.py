"""Alembic environment for polyroute's tables.

Migrations are run programmatically by :func:`polyroute.storage.migrate.upgrade`, which
hands over an open connection in ``config.attributes["connection"]``. Running ``alembic``
from the command line is supported too: it then connects to ``sqlalchemy.url`` from the
Alembic config (or ``POLYROUTE_DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from polyroute.storage.migrate import VERSION_TABLE
from polyroute.storage.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    from polyroute.storage.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("POLYROUTE_DATABASE_URL")
    if not url:
        raise RuntimeError("set sqlalchemy.url or POLYROUTE_DATABASE_URL to run migrations from the command line")
    asyncio.run(_run_with_own_engine(url))


if context.is_offline_mode():
    raise RuntimeError("polyroute migrations run online only")
run_migrations_online()
