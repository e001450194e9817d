"""Fixtures for storage tests: each backend in turn, an open Database, a unique owner per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from polyroute.storage import Database
from runtime.support import database_url, pg_url

__all__ = ["database_url", "pg_url"]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, lock_timeout=2.0)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def owner() -> str:
    """A fresh owner hash, so tests sharing the run's PostgreSQL database never see each other's rows."""
    return uuid.uuid4().hex
