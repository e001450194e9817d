"""Helpers for runtime tests: an echoing fake provider, app runners, PostgreSQL databases.

Imported as ``runtime.support`` (``tests/`` is on ``sys.path``) by the runtime and storage
test packages alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from fakes.scripted import ScriptedProvider, Step
from polyroute.router import Router
from polyroute.runtime import ServerSettings, create_app
from polyroute.types import ChatRequest

PG_ADMIN_URL = os.environ.get("POLYROUTE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


class EchoProvider(ScriptedProvider):
    """A :class:`ScriptedProvider` that, when no step is scripted, answers ``echo: <last user text>``.

    The echo is streamed word by word (spaces kept), so a reply names the message it answers:
    that is what lets the concurrency tests check that replies never get mixed up.
    """

    def __init__(
        self, name: str, steps: list[Step] | None = None, *, missing: str | None = None, delay: float = 0.0
    ) -> None:
        super().__init__(name, steps, missing=missing)
        self.delay = delay

    def _next(self) -> Step:
        if self.steps:
            return self.steps.pop(0)
        _model, request = self.calls[-1]
        said = ""
        if isinstance(request, ChatRequest):
            users = [m for m in request.messages if m.role == "user"]
            said = users[-1].text if users else ""
        words = f"echo: {said}".split(" ")
        return Step(tokens=[w if i == 0 else f" {w}" for i, w in enumerate(words)], delay=self.delay)


def make_router(*providers: Any, aliases: dict[str, list[str]] | None = None, timeout: float = 10.0) -> Router:
    router = Router(timeout=timeout, aliases=aliases or {"fast": ["fake:small"]})
    for provider in providers:
        router.register(provider)
    return router


def settings_for(tmp_path: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {"dataDir": str(tmp_path), "logLevel": "warning"}
    values.update(overrides)
    return ServerSettings.from_mapping(values, env={})


@contextlib.asynccontextmanager
async def running(app: Starlette, **headers: str) -> AsyncIterator[httpx2.AsyncClient]:
    """The app with its lifespan run, and an httpx2 client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://polyroute.test", headers=headers) as client:
            yield client


@contextlib.asynccontextmanager
async def client_for(router: Router, settings: ServerSettings, **headers: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with running(create_app(router, settings), **headers) as client:
        yield client


# --------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a thread, as ``polyroute serve`` would."""

    def __init__(self, app: Starlette, settings: ServerSettings) -> None:
        from polyroute.runtime.server import build_server

        self.port = settings.port
        self.server = build_server(app, settings)
        self._thread = threading.Thread(target=self.server.run, name="polyroute-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(15)


# --------------------------------------------------------------------------- PostgreSQL


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_reachable() -> str | None:
    """None when the test server answers, else why not (used as the skip reason)."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL is not reachable at {PG_ADMIN_URL.rsplit('@', 1)[-1]}: {type(exc).__name__}: {exc}"
    return None


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database ``polyroute_test_<random>``, dropped afterwards; yields its URL."""
    name = f"polyroute_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def require_postgres() -> None:
    """Skip the calling test, with the reason, when the PostgreSQL test server is unreachable."""
    reason = postgres_reachable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One fresh PostgreSQL database for the test run (skipped when the server is unreachable)."""
    require_postgres()
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn: a SQLite file in ``tmp_path``, then the run's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'polyroute.db'}"
    return str(request.getfixturevalue("pg_url"))
