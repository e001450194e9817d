"""Fixtures for runtime tests: an echoing fake provider behind a router, and the app around it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from polyroute.router import Router
from polyroute.runtime import ServerSettings
from runtime.support import EchoProvider, client_for, database_url, make_router, pg_url, settings_for

__all__ = ["database_url", "pg_url"]


@pytest.fixture
def fake() -> EchoProvider:
    return EchoProvider("fake")


@pytest.fixture
def router(fake: EchoProvider) -> Router:
    return make_router(fake)


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return settings_for(tmp_path)


@pytest.fixture
async def client(router: Router, settings: ServerSettings) -> AsyncIterator[httpx2.AsyncClient]:
    async with client_for(router, settings) as c:
        yield c
