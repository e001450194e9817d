"""Applying the Alembic migrations shipped inside the package, programmatically, at start.

The server calls :func:`upgrade` before it accepts requests, so a fresh data directory or an
older database is brought up to date without a separate ``alembic upgrade`` step. Several
replicas may start at once against one database; they take turns (a transaction-scoped
advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so exactly one runs each
migration and the rest see it done.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from polyroute.storage.engine import WRITE

__all__ = [
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: our own version table, so polyroute can share a database with an application's Alembic
VERSION_TABLE = "polyroute_alembic_version"
#: arbitrary constant key for ``pg_advisory_xact_lock`` while migrating
_MIGRATION_LOCK_KEY = 0x706F6C79726F7574  # "polyrout"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _migrate(connection: Connection, revision: str, down: bool) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    (command.downgrade if down else command.upgrade)(cfg, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database behind ``engine`` to ``revision`` in one transaction."""
    async with engine.execution_options(**{WRITE: True}).begin() as conn:
        await conn.run_sync(_migrate, revision, False)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Take the database back to ``revision`` (``"base"``: drop everything polyroute created)."""
    async with engine.execution_options(**{WRITE: True}).begin() as conn:
        await conn.run_sync(_migrate, revision, True)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
