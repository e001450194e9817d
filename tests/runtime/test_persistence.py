"""Restart the server over the same database: agents, sessions and messages are all still there."""

from __future__ import annotations

from pathlib import Path

from polyroute.types import ChatRequest
from runtime.support import EchoProvider, client_for, make_router, settings_for


async def test_restart_reads_the_session_back(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, databaseUrl=database_url, apiKeys=["pr-restart-key-1234"])
    auth = {"Authorization": "Bearer pr-restart-key-1234"}
    async with client_for(make_router(EchoProvider("fake")), settings, **auth) as client:
        agent = (
            await client.post("/agents", json={"name": "a", "model": "fake:small", "config": {"systemPrompt": "s"}})
        ).json()
        aid = agent["agentId"]
        session = (await client.post(f"/agents/{aid}/sessions", json={"userId": "u", "metadata": {"n": 1}})).json()
        url = f"/agents/{aid}/sessions/{session['sessionId']}"
        await client.post(f"{url}/messages", json={"content": "before restart"})
        before = (await client.get(f"{url}/messages")).json()
        session = (await client.get(url)).json()

    fresh = EchoProvider("fake")
    async with client_for(make_router(fresh), settings, **auth) as client:  # a new app: migrations run again
        assert (await client.get(f"/agents/{aid}")).json() == agent
        assert (await client.get(url)).json() == session
        assert (await client.get(f"{url}/messages")).json() == before
        r = await client.post(f"{url}/messages", json={"content": "after restart"})
        assert r.json()["seq"] == 4
        request = fresh.calls[-1][1]
        assert isinstance(request, ChatRequest)
        assert [m.text for m in request.messages] == ["s", "before restart", "echo: before restart", "after restart"]
