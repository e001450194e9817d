"""/openapi.json describes every route and body, and real responses match what it says."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
from starlette.routing import Route

from polyroute.runtime.openapi import openapi_document


def resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/components/schemas/"), ref
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if isinstance(node.get("$ref"), str) else [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def check(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> None:
    """A small JSON Schema checker for the keywords the document uses (enough to catch drift)."""
    if "$ref" in schema:
        check(doc, resolve(doc, schema["$ref"]), value, where)
        return
    if "oneOf" in schema or "anyOf" in schema:
        failures = []
        for option in schema.get("oneOf") or schema["anyOf"]:
            try:
                check(doc, option, value, where)
                return
            except AssertionError as exc:
                failures.append(str(exc))
        raise AssertionError(f"{where}: matches no option: {failures}")
    if "const" in schema:
        assert value == schema["const"], where
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        ok = any(
            isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool)) for k in kinds
        )
        assert ok, f"{where}: {value!r} is not {kinds}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in value, f"{where}: missing {name}"
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                check(doc, props[name], item, f"{where}.{name}")
            elif extra is False:
                raise AssertionError(f"{where}: undocumented field {name!r}")
            elif isinstance(extra, dict):
                check(doc, extra, item, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            check(doc, schema["items"], item, f"{where}[{i}]")


def test_document_is_openapi_3_and_every_reference_resolves() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    for ref in refs(doc):
        resolve(doc, ref)
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        for method, op in item.items():
            assert method in {"get", "post", "patch", "delete", "put"}
            assert op["responses"], (method, path)
            for status in op["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", status)
            for param in op.get("parameters", []):
                assert param["in"] in {"path", "query", "header"}
                if param["in"] == "path":
                    assert param["required"] is True
                    assert "{" + param["name"] + "}" in path
            for name in re.findall(r"{(\w+)}", path):
                assert name in [p["name"] for p in op.get("parameters", [])], (path, name)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_every_route_is_documented(client: httpx2.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    doc = openapi_document()
    for route in app.routes:
        assert isinstance(route, Route)
        path = route.path.replace("{agent_id}", "{agentId}").replace("{session_id}", "{sessionId}")
        assert path in doc["paths"], path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][path], (method, path)


def test_request_bodies_are_described_by_their_models() -> None:
    doc = openapi_document()
    body = doc["paths"]["/agents"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    agent = resolve(doc, body["$ref"])
    assert set(agent["required"]) == {"name", "model"}
    assert agent["properties"]["model"]["oneOf"][1] == {"$ref": "#/components/schemas/ModelRef"}
    config = resolve(doc, agent["properties"]["config"]["$ref"])
    assert {"fallbackModel", "fallbackModels", "systemPrompt", "historyTokenWindow"} <= set(config["properties"])
    assert (
        "text/event-stream"
        in doc["paths"]["/agents/{agentId}/sessions/{sessionId}/messages"]["post"]["responses"]["200"]["content"]
    )


async def test_served_document_and_docs_page(client: httpx2.AsyncClient) -> None:
    served = (await client.get("/openapi.json")).json()
    assert served == openapi_document()
    page = await client.get("/docs")
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text
    for path in served["paths"]:
        assert path in page.text


@pytest.fixture
async def flow(client: httpx2.AsyncClient) -> dict[str, httpx2.Response]:
    out: dict[str, httpx2.Response] = {}
    out["Agent"] = await client.post(
        "/agents",
        json={
            "name": "a",
            "model": "fast",
            "tools": [{"name": "t"}],
            "config": {"fallbackModel": "fake:big", "systemPrompt": "s"},
        },
    )
    aid = out["Agent"].json()["agentId"]
    out["AgentPage"] = await client.get("/agents")
    out["Session"] = await client.post(f"/agents/{aid}/sessions", json={"userId": "u", "metadata": {"k": [1]}})
    sid = out["Session"].json()["sessionId"]
    out["SessionPage"] = await client.get(f"/agents/{aid}/sessions")
    out["Reply"] = await client.post(f"/agents/{aid}/sessions/{sid}/messages", json={"content": "hi"})
    out["MessagePage"] = await client.get(f"/agents/{aid}/sessions/{sid}/messages")
    out["Health"] = await client.get("/health")
    out["Ready"] = await client.get("/ready")
    out["ChatCompletion"] = await client.post(
        "/v1/chat/completions", json={"model": "fast", "messages": [{"role": "user", "content": "x"}]}
    )
    out["EmbeddingList"] = await client.post("/v1/embeddings", json={"model": "fake:e", "input": "x"})
    out["ModelList"] = await client.get("/v1/models")
    out["Error"] = await client.get("/agents/nope")
    return out


@pytest.mark.parametrize(
    "schema",
    [
        "Agent",
        "AgentPage",
        "Session",
        "SessionPage",
        "Reply",
        "MessagePage",
        "Health",
        "Ready",
        "ChatCompletion",
        "EmbeddingList",
        "ModelList",
        "Error",
    ],
)
def test_real_responses_match_their_schemas(flow: dict[str, httpx2.Response], schema: str) -> None:
    doc = openapi_document()
    check(doc, {"$ref": f"#/components/schemas/{schema}"}, flow[schema].json())


def test_the_checker_catches_drift() -> None:
    doc = openapi_document()
    with pytest.raises(AssertionError, match="undocumented"):
        check(doc, {"$ref": "#/components/schemas/Health"}, {"status": "ok", "extra": 1})
    with pytest.raises(AssertionError, match="missing"):
        check(doc, {"$ref": "#/components/schemas/Session"}, {"sessionId": "s"})
