"""Bad input and upstream failures: each gets its documented status and JSON error body."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from fakes.scripted import Step
from polyroute import errors
from polyroute.router import RetryPolicy
from runtime.support import EchoProvider, client_for, make_router, settings_for

KEY = "pr-test-key-0123456789"
PROVIDER_SECRET = "sk-provider-secret-value-123"


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx2.AsyncClient, str]]:
    settings = settings_for(tmp_path, apiKeys=[KEY], maxBodyBytes=2048)
    async with client_for(make_router(EchoProvider("fake")), settings, Authorization=f"Bearer {KEY}") as client:
        aid = (await client.post("/agents", json={"name": "a", "model": "fake:small"})).json()["agentId"]
        sid = (await client.post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]
        yield client, f"/agents/{aid}/sessions/{sid}"


def _chunked(body: bytes, size: int = 512) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i : i + size]

    return gen()


# (name, request builder, status, error code, a field path expected in details or None)
BAD_INPUTS: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    ("malformed JSON", {"method": "POST", "url": "/agents", "content": b'{"name": "a",'}, 400, "invalid_json", None),
    ("empty body", {"method": "POST", "url": "/agents", "content": b""}, 400, "invalid_json", None),
    (
        "JSON that is not an object",
        {"method": "POST", "url": "/agents", "json": ["a"]},
        422,
        "validation_error",
        "(body)",
    ),
    (
        "wrong type",
        {"method": "POST", "url": "/agents", "json": {"name": 1, "model": "fake:m"}},
        422,
        "validation_error",
        "name",
    ),
    (
        "wrong nested type",
        {"method": "POST", "url": "/agents", "json": {"name": "a", "model": "fake:m", "config": {"maxTokens": "many"}}},
        422,
        "validation_error",
        "config.maxTokens",
    ),
    ("unknown agent", {"method": "GET", "url": "/agents/agent_unknown"}, 404, "not_found", None),
    (
        "unknown agent for messages",
        {"method": "POST", "url": "/agents/agent_unknown/sessions/sess_x/messages", "json": {"content": "hi"}},
        404,
        "not_found",
        None,
    ),
    (
        "oversized body (Content-Length)",
        {"method": "POST", "url": "/agents", "json": {"name": "a" * 3000, "model": "fake:m"}},
        413,
        "payload_too_large",
        None,
    ),
    (
        "oversized body (chunked, no length)",
        {"method": "POST", "url": "/agents", "chunked": b'{"name": "' + b"a" * 5000 + b'"}'},
        413,
        "payload_too_large",
        None,
    ),
    (
        "wrong key",
        {"method": "GET", "url": "/agents", "headers": {"Authorization": "Bearer nope"}},
        401,
        "unauthorized",
        None,
    ),
    ("missing key", {"method": "GET", "url": "/agents", "headers": {"Authorization": ""}}, 401, "unauthorized", None),
    ("unknown route", {"method": "GET", "url": "/nothing/here"}, 404, "not_found", None),
    ("wrong method", {"method": "PUT", "url": "/agents"}, 405, "method_not_allowed", None),
    ("bad page size", {"method": "GET", "url": "/agents?limit=0"}, 422, "validation_error", "query.limit"),
    (
        "bad content length",
        {"method": "POST", "url": "/agents", "headers": {"Content-Length": "x"}, "content": b"{}"},
        400,
        "bad_request",
        None,
    ),
]


@pytest.mark.parametrize(("name", "req", "status", "code", "path"), BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
async def test_bad_inputs_table(
    keyed: tuple[httpx2.AsyncClient, str], name: str, req: dict[str, Any], status: int, code: str, path: str | None
) -> None:
    client, _ = keyed
    req = dict(req)
    if "chunked" in req:
        req["content"] = _chunked(req.pop("chunked"))
    r = await client.request(**req)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if path is not None:
        assert path in [e["path"] for e in body["error"]["details"]["errors"]]
    assert "Traceback" not in r.text


async def test_405_names_the_allowed_methods(keyed: tuple[httpx2.AsyncClient, str]) -> None:
    client, _ = keyed
    r = await client.put("/agents")
    assert set(r.headers["allow"].split(", ")) >= {"GET", "POST"}


UPSTREAM: list[tuple[str, errors.PolyrouteError, int, str | None]] = [
    ("unavailable", errors.ProviderUnavailableError("down", provider="fake", status=503, retry_after=2.5), 503, "3"),
    ("rate limited", errors.RateLimitedError("slow down", provider="fake", status=429, retry_after=7), 429, "7"),
    ("timeout", errors.TimeoutError("slow", provider="fake", kind="first_token"), 504, None),
    ("not configured", errors.NotConfiguredError("no key", env_var="FAKE_API_KEY", provider="fake"), 503, None),
    ("auth upstream", errors.AuthenticationError("bad key", provider="fake", status=401), 502, None),
    ("capacity", errors.CapacityError("no slot", provider="fake"), 429, "1"),
    ("bad request", errors.BadRequestError("nope", provider="fake", status=400), 400, None),
    ("content filtered", errors.ContentFilteredError("blocked", provider="fake", status=400), 400, None),
]


@pytest.mark.parametrize("endpoint", ["messages", "v1"])
@pytest.mark.parametrize(("name", "error", "status", "retry_after"), UPSTREAM, ids=[row[0] for row in UPSTREAM])
async def test_upstream_failures_map_to_status_with_attempts(
    tmp_path: Path, name: str, error: errors.PolyrouteError, status: int, retry_after: str | None, endpoint: str
) -> None:
    fake = EchoProvider("fake", [Step(error=error)])
    router = make_router(fake)
    router.retry = RetryPolicy(max_attempts=1)
    async with client_for(router, settings_for(tmp_path)) as client:
        if endpoint == "messages":
            aid = (await client.post("/agents", json={"name": "a", "model": "fake:small"})).json()["agentId"]
            sid = (await client.post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]
            r = await client.post(f"/agents/{aid}/sessions/{sid}/messages", json={"content": "hi"})
        else:
            r = await client.post(
                "/v1/chat/completions", json={"model": "fake:small", "messages": [{"role": "user", "content": "x"}]}
            )
    assert r.status_code == status, r.text
    assert r.headers.get("retry-after") == retry_after
    details = r.json()["error"]["details"]
    assert details["attempts"][0]["provider"] == "fake"
    assert details["attempts"][0]["error"] == type(error).__name__


async def test_when_nothing_can_be_called_it_is_503(tmp_path: Path) -> None:
    down = errors.ProviderUnavailableError("down", provider="fake", status=503, retry_after=30)
    router = make_router(EchoProvider("fake", [Step(error=down)]))
    router.retry = RetryPolicy(max_attempts=1)
    body = {"model": "fake:small", "messages": [{"role": "user", "content": "x"}]}
    async with client_for(router, settings_for(tmp_path)) as client:
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 503
        r = await client.post("/v1/chat/completions", json=body)  # the circuit is open now: nothing is called
    assert r.status_code == 503
    assert [a["outcome"] for a in r.json()["error"]["details"]["attempts"]] == ["skipped"]


async def test_unexpected_exceptions_are_a_bare_500_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = EchoProvider("fake")
    async with client_for(make_router(fake), settings_for(tmp_path)) as client:
        aid = (await client.post("/agents", json={"name": "a", "model": "fake:small"})).json()["agentId"]
        sid = (await client.post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]

        def explode(session_id: str, **kw: object) -> object:
            raise RuntimeError(f"secret detail {PROVIDER_SECRET}")

        runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
        runtime.store.history = explode
        with caplog.at_level(logging.DEBUG):
            r = await client.post(f"/agents/{aid}/sessions/{sid}/messages", json={"content": "hi"})
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "internal_error"
    assert error["message"] == "internal server error"
    assert set(error["details"]) == {"errorId"}
    assert PROVIDER_SECRET not in r.text
    assert "Traceback" not in caplog.text
    assert PROVIDER_SECRET not in caplog.text
    assert error["details"]["errorId"] in caplog.text


async def test_provider_keys_are_redacted_from_error_bodies(tmp_path: Path) -> None:
    leaky = errors.AuthenticationError(
        "rejected", provider="fake", status=401, provider_message=f"Incorrect API key provided: {PROVIDER_SECRET}"
    )
    fake = EchoProvider("fake", [Step(error=leaky)])
    fake.api_key = PROVIDER_SECRET  # type: ignore[attr-defined]
    async with client_for(make_router(fake), settings_for(tmp_path)) as client:
        r = await client.post(
            "/v1/chat/completions", json={"model": "fake:x", "messages": [{"role": "user", "content": "x"}]}
        )
    assert r.status_code == 502
    assert PROVIDER_SECRET not in r.text
    assert "[redacted]" in r.text


async def test_a_bug_inside_a_stream_ends_it_cleanly_and_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from polyroute.types import ChatStreamEvent

    async def broken_stream(request: object) -> AsyncIterator[ChatStreamEvent]:
        yield ChatStreamEvent("token", delta="partial", provider="fake", model="m")
        raise RuntimeError(f"bug holding {PROVIDER_SECRET}")

    router = make_router(EchoProvider("fake"))
    router.stream = broken_stream  # type: ignore[assignment,method-assign]
    body = {"model": "fake:m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with client_for(router, settings_for(tmp_path)) as client:
        with caplog.at_level(logging.INFO):
            r = await client.post("/v1/chat/completions", json=body)
    lines = [line for line in r.text.split("\n") if line.startswith("data: ")]
    assert '"partial"' in lines[1]
    assert '"internal_error"' in lines[-1]
    assert "[DONE]" not in r.text
    assert PROVIDER_SECRET not in r.text
    assert "background task failed: RuntimeError" in caplog.text
    assert "Traceback" not in caplog.text
    assert PROVIDER_SECRET not in caplog.text
