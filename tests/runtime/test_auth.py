"""API keys: required everywhere but /health, both header forms, ownership by key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import text

from polyroute.runtime import create_app
from polyroute.runtime.auth import hash_key
from runtime.support import EchoProvider, client_for, make_router, running, settings_for

KEY_A = "pr-key-alpha-0123456789"
KEY_B = "pr-key-bravo-9876543210"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx2.AsyncClient]:
    async with client_for(make_router(EchoProvider("fake")), settings_for(tmp_path, apiKeys=[KEY_A, KEY_B])) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/agents"),
        ("POST", "/agents"),
        ("GET", "/ready"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/no/such/route"),
    ],
)
async def test_every_endpoint_but_health_needs_a_key(client: httpx2.AsyncClient, method: str, path: str) -> None:
    r = await client.request(method, path)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


async def test_health_is_public(client: httpx2.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong-key"},
        {"X-API-Key": "wrong"},
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": "Bearer "},
    ],
)
async def test_a_wrong_key_is_401_and_the_body_does_not_echo_it(
    client: httpx2.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.get("/agents", headers=headers)
    assert r.status_code == 401
    assert set(r.json()) == {"error"}
    assert "wrong" not in r.text


@pytest.mark.parametrize("headers", [bearer(KEY_A), {"X-API-Key": KEY_A}, {"authorization": f"bearer {KEY_A}"}])
async def test_both_header_forms_are_accepted(client: httpx2.AsyncClient, headers: dict[str, str]) -> None:
    assert (await client.get("/agents", headers=headers)).status_code == 200


async def test_agents_and_sessions_belong_to_the_key_that_created_them(client: httpx2.AsyncClient) -> None:
    agent = (await client.post("/agents", json={"name": "a", "model": "fake:m"}, headers=bearer(KEY_A))).json()
    aid = agent["agentId"]
    sid = (await client.post(f"/agents/{aid}/sessions", json={}, headers=bearer(KEY_A))).json()["sessionId"]
    session_url = f"/agents/{aid}/sessions/{sid}"
    for method, url, body in [
        ("GET", f"/agents/{aid}", None),
        ("PATCH", f"/agents/{aid}", {"name": "mine now"}),
        ("DELETE", f"/agents/{aid}", None),
        ("POST", f"/agents/{aid}/sessions", {}),
        ("GET", f"/agents/{aid}/sessions", None),
        ("GET", session_url, None),
        ("DELETE", session_url, None),
        ("POST", f"{session_url}/messages", {"content": "hi"}),
        ("GET", f"{session_url}/messages", None),
    ]:
        r = await client.request(method, url, json=body, headers=bearer(KEY_B))
        assert r.status_code == 404, (method, url)
        assert r.json()["error"]["code"] == "not_found"
    assert (await client.get("/agents", headers=bearer(KEY_B))).json()["data"] == []
    assert (await client.get(f"/agents/{aid}", headers={"X-API-Key": KEY_A})).json() == agent
    assert (await client.get(session_url, headers=bearer(KEY_A))).status_code == 200


async def test_only_a_hash_of_the_key_is_stored(tmp_path: Path) -> None:
    app = create_app(make_router(EchoProvider("fake")), settings_for(tmp_path, apiKeys=[KEY_A]))
    async with running(app, **bearer(KEY_A)) as client:
        aid = (await client.post("/agents", json={"name": "a", "model": "fake:m"})).json()["agentId"]
        await client.post(f"/agents/{aid}/sessions", json={})
        async with app.state.runtime.database.store.engine.connect() as conn:
            owners = {
                row[0]
                for row in await conn.execute(
                    text("SELECT owner_hash FROM agents UNION SELECT owner_hash FROM sessions")
                )
            }
    assert owners == {hash_key(KEY_A)}
    for path in tmp_path.glob("polyroute.db*"):  # the database and its WAL
        assert KEY_A.encode() not in path.read_bytes()


async def test_without_keys_everything_is_open_and_owned_by_nobody(tmp_path: Path) -> None:
    async with client_for(make_router(EchoProvider("fake")), settings_for(tmp_path)) as client:
        assert (await client.post("/agents", json={"name": "a", "model": "fake:m"})).status_code == 201
        assert len((await client.get("/agents", headers=bearer("anything"))).json()["data"]) == 1
