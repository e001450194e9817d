"""/agents: create, read, list, patch, delete; model references checked when saved."""

from __future__ import annotations

import httpx2
import pytest

GUIDE_AGENT = {
    "name": "routing-agent",
    "description": "answers through the router",
    "model": "fake:small",
    "tools": [],
    "config": {"fallbackModel": "fake:big"},
}


async def test_create_returns_the_stored_agent(client: httpx2.AsyncClient) -> None:
    r = await client.post("/agents", json=GUIDE_AGENT)
    assert r.status_code == 201
    agent = r.json()
    assert agent["agentId"].startswith("agent_")
    assert r.headers["location"] == f"/agents/{agent['agentId']}"
    assert {k: agent[k] for k in ("name", "description", "model", "tools", "config")} == {
        k: GUIDE_AGENT[k] for k in ("name", "description", "model", "tools", "config")
    }
    assert agent["createdAt"].endswith("Z")
    assert (await client.get(f"/agents/{agent['agentId']}")).json() == agent


@pytest.mark.parametrize(
    "model",
    [
        "fake:small",
        "fast",  # an alias the router knows
        "ollama:llama3:8b",  # the model id keeps its own colon
        {"provider": "fake", "modelId": "small", "temperature": 0.2, "maxTokens": 64, "timeoutMs": 5000},
    ],
)
async def test_model_accepts_every_documented_form(client: httpx2.AsyncClient, model: object) -> None:
    r = await client.post("/agents", json={"name": "a", "model": model})
    assert r.status_code == 201, r.text
    assert r.json()["model"] == model


@pytest.mark.parametrize(
    ("body", "path", "needle"),
    [
        ({"name": "a", "model": "nope"}, "model", "unknown model alias 'nope'"),
        ({"name": "a", "model": ":gpt"}, "model", "provider:model_id"),
        ({"name": "a", "model": "openai:"}, "model", "provider:model_id"),
        ({"name": "a", "model": ""}, "model", "must not be empty"),
        ({"name": "a", "model": 42}, "model", "expected a 'provider:model_id' string"),
        ({"name": "a", "model": {"provider": "fake"}}, "model", "modelId"),
        ({"name": "a", "model": {"provider": "fake", "modelId": "x", "temperature": 9}}, "model", "temperature"),
        (
            {"name": "a", "model": "fake:x", "config": {"fallbackModel": "missing-alias"}},
            "config.fallbackModel",
            "unknown",
        ),
        (
            {"name": "a", "model": "fake:x", "config": {"fallbackModels": ["fake:y", "bad"]}},
            "config.fallbackModels.1",
            "bad",
        ),
        ({"name": "a", "model": "fake:x", "config": {"fallbakModel": "fake:y"}}, "config.fallbakModel", "Extra inputs"),
        ({"name": "a", "model": "fake:x", "config": {"historyTokenWindow": 0}}, "config.historyTokenWindow", "greater"),
        ({"model": "fake:x"}, "name", "Field required"),
        ({"name": "a", "model": "fake:x", "tools": [{"description": "no name"}]}, "tools.0.name", "Field required"),
    ],
)
async def test_invalid_agents_are_422_with_the_field_path(
    client: httpx2.AsyncClient, body: dict[str, object], path: str, needle: str
) -> None:
    r = await client.post("/agents", json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    paths = {e["path"]: e["message"] for e in error["details"]["errors"]}
    assert path in paths, paths
    assert needle in paths[path]


async def test_openai_style_tools_are_accepted_and_stored_in_our_shape(client: httpx2.AsyncClient) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}}}
    r = await client.post("/agents", json={"name": "a", "model": "fake:x", "tools": [tool]})
    assert r.status_code == 201
    assert r.json()["tools"] == [{"name": "lookup", "description": "find", "parameters": {"type": "object"}}]


async def test_list_pages_in_creation_order(client: httpx2.AsyncClient) -> None:
    ids = [
        (await client.post("/agents", json={"name": f"a{i}", "model": "fake:x"})).json()["agentId"] for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/agents", params=params)).json()
        seen += [a["agentId"] for a in page["data"]]
        assert len(page["data"]) <= 2
        cursor = page["nextCursor"]
        assert page["hasMore"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == sorted(ids)
    assert set(seen) == set(ids)


@pytest.mark.parametrize("limit", ["0", "abc", "1000"])
async def test_bad_page_size_is_422(client: httpx2.AsyncClient, limit: str) -> None:
    r = await client.get("/agents", params={"limit": limit})
    assert r.status_code == 422
    assert r.json()["error"]["details"]["errors"][0]["path"] == "query.limit"


async def test_patch_changes_fields_and_merges_config(client: httpx2.AsyncClient) -> None:
    agent = (
        await client.post("/agents", json={**GUIDE_AGENT, "config": {"fallbackModel": "fake:big", "temperature": 0.5}})
    ).json()
    url = f"/agents/{agent['agentId']}"
    r = await client.patch(url, json={"name": "renamed", "config": {"systemPrompt": "be brief", "temperature": None}})
    assert r.status_code == 200
    patched = r.json()
    assert patched["name"] == "renamed"
    assert patched["model"] == "fake:small"
    assert patched["config"] == {"fallbackModel": "fake:big", "systemPrompt": "be brief"}
    assert patched["updatedAt"] >= agent["updatedAt"]
    assert (await client.get(url)).json() == patched


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"model": "unknown-alias"}, "model"),
        ({"config": {"fallbackModel": "nope"}}, "config.fallbackModel"),
        ({"config": {"temperature": 5}}, "config.temperature"),
        ({"name": None}, "(body)"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_patch_validates_like_create(client: httpx2.AsyncClient, body: dict[str, object], path: str) -> None:
    agent = (await client.post("/agents", json=GUIDE_AGENT)).json()
    r = await client.patch(f"/agents/{agent['agentId']}", json=body)
    assert r.status_code == 422
    assert path in {e["path"] for e in r.json()["error"]["details"]["errors"]}
    assert (await client.get(f"/agents/{agent['agentId']}")).json() == agent


async def test_delete_removes_the_agent_and_its_sessions(client: httpx2.AsyncClient) -> None:
    agent = (await client.post("/agents", json=GUIDE_AGENT)).json()
    aid = agent["agentId"]
    sid = (await client.post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]
    await client.post(f"/agents/{aid}/sessions/{sid}/messages", json={"content": "hi"})
    r = await client.delete(f"/agents/{aid}")
    assert r.status_code == 204
    assert r.content == b""
    for url in (f"/agents/{aid}", f"/agents/{aid}/sessions/{sid}", f"/agents/{aid}/sessions/{sid}/messages"):
        missing = await client.get(url)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
    assert (await client.delete(f"/agents/{aid}")).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_unknown_agent_is_404(client: httpx2.AsyncClient, method: str) -> None:
    r = await client.request(method, "/agents/agent_missing", json={"name": "x"} if method == "PATCH" else None)
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "code": "not_found",
            "message": "agent 'agent_missing' was not found",
            "details": {"agent": "agent_missing"},
        }
    }
