"""Streaming replies (SSE): events, what is stored when, disconnects and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from fakes.scripted import Step
from polyroute import errors
from polyroute.runtime import create_app
from runtime.support import EchoProvider, ServerThread, client_for, free_port, make_router, settings_for


def parse_sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "message"), orjson.loads(fields["data"])))
    return events


async def _session(client: httpx2.AsyncClient, **config: object) -> str:
    aid = (await client.post("/agents", json={"name": "a", "model": "fake:small", "config": config})).json()["agentId"]
    sid = (await client.post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]
    return f"/agents/{aid}/sessions/{sid}"


@pytest.mark.parametrize(
    "how",
    [
        {"params": {"stream": "true"}},
        {"headers": {"Accept": "text/event-stream"}},
        {"body": {"stream": True}},
    ],
)
async def test_stream_sends_one_event_per_token_then_the_stored_reply(
    client: httpx2.AsyncClient, how: dict[str, Any]
) -> None:
    url = await _session(client)
    body = {"role": "user", "content": "stream a greeting", **how.get("body", {})}
    r = await client.post(f"{url}/messages", json=body, params=how.get("params"), headers=how.get("headers"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[:-1] == [
        ("token", {"delta": "echo:"}),
        ("token", {"delta": " stream"}),
        ("token", {"delta": " a"}),
        ("token", {"delta": " greeting"}),
    ]
    name, final = events[-1]
    assert name == "end"
    assert final["content"] == "echo: stream a greeting"
    assert final["status"] == "complete"
    assert final["usage"]["completionTokens"] == 4
    assert final["provider"] == "fake"
    assert final["state"] == "active"
    stored = (await client.get(f"{url}/messages")).json()["data"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "stream a greeting"),
        ("assistant", "echo: stream a greeting"),
    ]
    assert stored[1]["messageId"] == final["messageId"]


async def test_stream_false_in_query_wins_over_accept(client: httpx2.AsyncClient) -> None:
    url = await _session(client)
    r = await client.post(
        f"{url}/messages", params={"stream": "false"}, headers={"Accept": "text/event-stream"}, json={"content": "hi"}
    )
    assert r.headers["content-type"] == "application/json"


async def test_failure_before_any_token_is_an_error_event_and_stores_the_user_message(tmp_path: Path) -> None:
    fake = EchoProvider(
        "fake", [Step(error=errors.RateLimitedError("slow down", retry_after=3, provider="fake", status=429))]
    )
    async with client_for(make_router(fake), settings_for(tmp_path)) as client:
        url = await _session(client)
        r = await client.post(f"{url}/messages?stream=true", json={"content": "hi"})
        events = parse_sse(r.text)
        assert [name for name, _ in events] == ["error"]
        payload = events[0][1]
        assert payload["status"] == 429
        assert payload["error"]["code"] == "all_candidates_failed"
        assert payload["error"]["details"]["attempts"][0]["status"] == 429
        stored = (await client.get(f"{url}/messages")).json()["data"]
        assert [(m["role"], m["status"]) for m in stored] == [("user", "error")]
        assert (await client.get(url)).json()["state"] == "error"


async def test_stream_headers_name_the_streaming_candidate_and_what_failed_before_it(tmp_path: Path) -> None:
    down = EchoProvider("down", [Step(error=errors.ProviderUnavailableError("boom", provider="down", status=503))])
    async with client_for(make_router(down, EchoProvider("fake")), settings_for(tmp_path)) as client:
        agent = {"name": "a", "model": "down:big", "config": {"fallbackModel": "fake:small"}}
        aid = (await client.post("/agents", json=agent)).json()["agentId"]
        sid = (await client.post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]
        url = f"/agents/{aid}/sessions/{sid}"
        r = await client.post(f"{url}/messages?stream=true", json={"content": "hi"})
    assert parse_sse(r.text)[-1][0] == "end"
    assert r.headers["x-polyroute-provider"] == "fake"
    assert r.headers["x-polyroute-attempts"] == "down:big=error(ProviderUnavailableError 503), fake:small=streaming"


def test_header_tokens_say_retries_and_waits() -> None:
    from polyroute.runtime.routing_headers import turn_headers

    row = {"provider": "a", "model": "m", "outcome": "ok", "retry": 2, "waitedMs": 1250.0}
    assert turn_headers("a", [row])["x-polyroute-attempts"] == "a:m=ok[retry 2][waited 1.25s]"


async def test_failure_after_tokens_stores_an_incomplete_reply(tmp_path: Path) -> None:
    broken = errors.StreamInterruptedError("dropped", kind="disconnect", provider="fake", model="small")
    fake = EchoProvider("fake", [Step(tokens=["Hel", "lo", " there"], error=broken, fail_after=2)])
    async with client_for(make_router(fake), settings_for(tmp_path)) as client:
        url = await _session(client)
        r = await client.post(f"{url}/messages?stream=true", json={"content": "hi"})
        events = parse_sse(r.text)
        assert events[:2] == [("token", {"delta": "Hel"}), ("token", {"delta": "lo"})]
        assert events[2][0] == "error"
        assert len(events) == 3
        details = events[2][1]["error"]["details"]
        stored = (await client.get(f"{url}/messages")).json()["data"]
        assert [(m["role"], m["content"], m["status"]) for m in stored] == [
            ("user", "hi", "complete"),
            ("assistant", "Hello", "incomplete"),
        ]
        assert stored[1]["messageId"] == details["incompleteMessageId"]
        assert stored[1]["error"]["code"] == "stream_interrupted"
        # who wrote the partial reply, every attempt, and what it cost (estimated: never reported)
        assert (stored[1]["provider"], stored[1]["model"]) == ("fake", "small")
        assert [(a["provider"], a["outcome"]) for a in stored[1]["attempts"]] == [("fake", "error")]
        assert stored[1]["attempts"][0]["usageEstimated"] is True
        assert stored[1]["usage"]["completionTokens"] == 2 and stored[1]["totalUsage"] == stored[1]["usage"]
        assert (await client.get(url)).json()["state"] == "error"
        # the session is not stuck: the next message is answered, with the partial reply as context
        r = await client.post(f"{url}/messages?stream=true", json={"content": "again"})
        assert parse_sse(r.text)[-1][0] == "end"
        assert (await client.get(url)).json()["state"] == "active"


def _slow_fake() -> EchoProvider:
    return EchoProvider("fake", [Step(tokens=["one", " two", " three", " four"], gap=0.3)])


async def _read_until_first_token(chunks: AsyncIterator[str]) -> str:
    seen = ""
    async for chunk in chunks:
        seen += chunk
        if "event: token" in seen:
            return seen
    return seen


async def _stored_after_restart(router_provider: EchoProvider, tmp_path: Path, url: str) -> list[dict[str, Any]]:
    async with client_for(make_router(router_provider), settings_for(tmp_path)) as client:
        return list((await client.get(f"{url}/messages")).json()["data"])


async def test_client_disconnect_stores_what_arrived_as_incomplete(tmp_path: Path) -> None:
    fake = _slow_fake()
    settings = settings_for(tmp_path, port=free_port())
    app = create_app(make_router(fake), settings)
    with ServerThread(app, settings) as server:
        async with httpx2.AsyncClient(base_url=server.url, timeout=10) as client:
            url = await _session(client)
            async with client.stream("POST", f"{url}/messages?stream=true", json={"content": "count"}) as response:
                assert "one" in await _read_until_first_token(response.aiter_text())
            # the client has gone; the server stops the model call and stores the partial reply
            for _ in range(100):
                stored = (await client.get(f"{url}/messages")).json()["data"]
                if len(stored) == 2:
                    break
                await asyncio.sleep(0.05)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "incomplete")]
    assert stored[1]["content"].startswith("one")
    assert stored[1]["content"] != "one two three four"
    assert stored[1]["error"]["code"] == "client_disconnected"
    assert fake.cancelled == 1


async def test_shutdown_ends_open_streams_with_an_error_event_and_stores_them(tmp_path: Path) -> None:
    fake = _slow_fake()
    settings = settings_for(tmp_path, port=free_port())
    app = create_app(make_router(fake), settings)
    with ServerThread(app, settings) as server:
        async with httpx2.AsyncClient(base_url=server.url, timeout=10) as client:
            url = await _session(client)
            async with client.stream("POST", f"{url}/messages?stream=true", json={"content": "count"}) as response:
                chunks = response.aiter_text()
                seen = await _read_until_first_token(chunks)
                server.server.should_exit = True  # what SIGTERM does
                async for chunk in chunks:
                    seen += chunk
    events = parse_sse(seen)
    assert events[0] == ("token", {"delta": "one"})
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "server_shutting_down"
    assert "end" not in [name for name, _ in events]
    stored = await _stored_after_restart(EchoProvider("fake"), tmp_path, url)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "incomplete")]
    assert stored[1]["error"]["code"] == "server_shutting_down"
