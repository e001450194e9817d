"""/agents/{agentId}/sessions: create, read, list by user with pages, delete."""

from __future__ import annotations

import httpx2
import pytest


@pytest.fixture
async def agent_id(client: httpx2.AsyncClient) -> str:
    return str((await client.post("/agents", json={"name": "a", "model": "fake:small"})).json()["agentId"])


async def test_create_returns_201_with_the_documented_fields(client: httpx2.AsyncClient, agent_id: str) -> None:
    r = await client.post(f"/agents/{agent_id}/sessions", json={"userId": "u-1", "metadata": {"channel": "web"}})
    assert r.status_code == 201
    session = r.json()
    assert session["sessionId"].startswith("sess_")
    assert session["agentId"] == agent_id
    assert session["state"] == "active"
    assert session["createdAt"].endswith("Z")
    assert session["userId"] == "u-1"
    assert session["metadata"] == {"channel": "web"}
    assert session["messageCount"] == 0
    assert r.headers["location"] == f"/agents/{agent_id}/sessions/{session['sessionId']}"
    assert (await client.get(f"/agents/{agent_id}/sessions/{session['sessionId']}")).json() == session


async def test_an_empty_body_is_a_session_with_defaults(client: httpx2.AsyncClient, agent_id: str) -> None:
    r = await client.post(f"/agents/{agent_id}/sessions")
    assert r.status_code == 201
    assert r.json()["userId"] is None
    assert r.json()["metadata"] == {}


async def test_list_filters_by_user_and_pages(client: httpx2.AsyncClient, agent_id: str) -> None:
    mine = [
        (await client.post(f"/agents/{agent_id}/sessions", json={"userId": "alice"})).json()["sessionId"]
        for _ in range(3)
    ]
    await client.post(f"/agents/{agent_id}/sessions", json={"userId": "bob"})
    first = (await client.get(f"/agents/{agent_id}/sessions", params={"userId": "alice", "limit": "2"})).json()
    assert first["hasMore"] is True
    second = (
        await client.get(
            f"/agents/{agent_id}/sessions", params={"userId": "alice", "limit": "2", "cursor": first["nextCursor"]}
        )
    ).json()
    assert second["hasMore"] is False
    assert second["nextCursor"] is None
    got = [s["sessionId"] for s in first["data"] + second["data"]]
    assert got == sorted(mine)
    everyone = (await client.get(f"/agents/{agent_id}/sessions")).json()["data"]
    assert len(everyone) == 4


async def test_sessions_of_another_agent_are_not_listed_or_reachable(client: httpx2.AsyncClient, agent_id: str) -> None:
    other = (await client.post("/agents", json={"name": "b", "model": "fake:small"})).json()["agentId"]
    sid = (await client.post(f"/agents/{agent_id}/sessions", json={})).json()["sessionId"]
    assert (await client.get(f"/agents/{other}/sessions")).json()["data"] == []
    r = await client.get(f"/agents/{other}/sessions/{sid}")
    assert r.status_code == 404
    assert r.json()["error"]["details"] == {"session": sid}


async def test_delete_session(client: httpx2.AsyncClient, agent_id: str) -> None:
    sid = (await client.post(f"/agents/{agent_id}/sessions", json={})).json()["sessionId"]
    await client.post(f"/agents/{agent_id}/sessions/{sid}/messages", json={"content": "hello"})
    assert (await client.delete(f"/agents/{agent_id}/sessions/{sid}")).status_code == 204
    assert (await client.get(f"/agents/{agent_id}/sessions/{sid}")).status_code == 404
    assert (await client.delete(f"/agents/{agent_id}/sessions/{sid}")).status_code == 404


async def test_unknown_agent_or_session_is_404_naming_it(client: httpx2.AsyncClient, agent_id: str) -> None:
    r = await client.post("/agents/agent_nope/sessions", json={})
    assert r.status_code == 404
    assert r.json()["error"]["details"] == {"agent": "agent_nope"}
    r = await client.get(f"/agents/{agent_id}/sessions/sess_nope")
    assert r.status_code == 404
    assert r.json()["error"]["details"] == {"session": "sess_nope"}
    r = await client.get("/agents/agent_nope/sessions/sess_nope")
    assert r.json()["error"]["details"] == {"agent": "agent_nope"}


@pytest.mark.parametrize(
    ("body", "path"),
    [({"userId": 7}, "userId"), ({"metadata": []}, "metadata"), ({"userId": ""}, "userId"), ({"user": "x"}, "user")],
)
async def test_invalid_session_bodies_are_422(
    client: httpx2.AsyncClient, agent_id: str, body: object, path: str
) -> None:
    r = await client.post(f"/agents/{agent_id}/sessions", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["errors"][0]["path"] == path
