"""Posting messages: what is sent to the model, what is stored, how failures leave the session."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from fakes.scripted import Step
from polyroute import errors
from polyroute.router.policy import HedgePolicy, RoutingPolicy
from polyroute.types import ChatRequest
from runtime.support import EchoProvider, client_for, make_router, settings_for


async def _session(client: httpx2.AsyncClient, **agent: object) -> str:
    body = {"name": "a", "model": "fake:small", **agent}
    r = await client.post("/agents", json=body)
    assert r.status_code == 201, r.text
    aid = r.json()["agentId"]
    sid = (await client.post(f"/agents/{aid}/sessions", json={"userId": "u"})).json()["sessionId"]
    return f"/agents/{aid}/sessions/{sid}"


def _last_request(provider: EchoProvider) -> ChatRequest:
    request = provider.calls[-1][1]
    assert isinstance(request, ChatRequest)
    return request


async def test_reply_has_every_documented_field(client: httpx2.AsyncClient) -> None:
    url = await _session(client)
    r = await client.post(f"{url}/messages", json={"role": "user", "content": "hello there"})
    assert r.status_code == 200
    reply = r.json()
    assert reply["role"] == "assistant"
    assert reply["content"] == "echo: hello there"
    assert reply["toolCalls"] is None
    assert reply["finishReason"] == "stop"
    assert reply["usage"]["totalTokens"] == reply["usage"]["promptTokens"] + reply["usage"]["completionTokens"] > 0
    assert (reply["provider"], reply["model"]) == ("fake", "small")
    assert [a["outcome"] for a in reply["attempts"]] == ["ok"]
    assert reply["state"] == "active"
    assert reply["messageId"].startswith("msg_")
    assert r.headers["x-polyroute-provider"] == "fake"
    assert r.headers["x-polyroute-attempts"].startswith("fake:") and r.headers["x-polyroute-attempts"].endswith("=ok")


async def test_history_is_sent_in_order_with_the_system_prompt_first(
    client: httpx2.AsyncClient, fake: EchoProvider
) -> None:
    url = await _session(client, config={"systemPrompt": "You are terse.", "temperature": 0.3, "maxTokens": 50})
    await client.post(f"{url}/messages", json={"content": "one"})
    await client.post(f"{url}/messages", json={"content": "two"})
    request = _last_request(fake)
    assert [(m.role, m.text) for m in request.messages] == [
        ("system", "You are terse."),
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
    ]
    assert (request.temperature, request.max_tokens) == (0.3, 50)
    assert request.model == "fake:small"


async def test_history_is_trimmed_to_the_agents_token_window(client: httpx2.AsyncClient, fake: EchoProvider) -> None:
    url = await _session(client, config={"systemPrompt": "sys", "historyTokenWindow": 60})
    for i in range(6):
        await client.post(f"{url}/messages", json={"content": f"message {i} " + "x" * 40})
    sent = _last_request(fake).messages
    assert sent[0].role == "system"
    assert sent[-1].text.startswith("message 5")
    assert len(sent) < 12  # older turns were dropped...
    assert sent[1].role == "user"  # ...and the kept history starts at a user message
    assert sum(len(m.text) for m in sent) / 4 + 4 * len(sent) <= 60 + 4


async def test_messages_form_appends_several_messages(client: httpx2.AsyncClient, fake: EchoProvider) -> None:
    url = await _session(client)
    r = await client.post(
        f"{url}/messages", json={"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    )
    assert r.status_code == 200
    assert len(r.json()["userMessageIds"]) == 2
    stored = (await client.get(f"{url}/messages")).json()["data"]
    assert [(m["seq"], m["role"], m["content"]) for m in stored] == [
        (1, "user", "a"),
        (2, "user", "b"),
        (3, "assistant", "echo: b"),
    ]


async def test_fallback_answers_when_the_primary_fails(tmp_path: Path) -> None:
    primary = EchoProvider(
        "primary", [Step(error=errors.ProviderUnavailableError("down", provider="primary", status=503))]
    )
    fallback = EchoProvider("fake")
    async with client_for(make_router(primary, fallback), settings_for(tmp_path)) as client:
        url = await _session(client, model="primary:big", config={"fallbackModel": "fake:small"})
        r = await client.post(f"{url}/messages", json={"content": "hi"})
    assert r.status_code == 200
    assert r.json()["provider"] == "fake"
    assert r.headers["x-polyroute-provider"] == "fake"
    assert [(a["provider"], a["outcome"]) for a in r.json()["attempts"]] == [("primary", "error"), ("fake", "ok")]


async def test_a_hedged_reply_reports_both_calls_and_what_they_cost(tmp_path: Path) -> None:
    slow, fast = EchoProvider("slow", [Step(delay=5)]), EchoProvider("fake")
    router = make_router(slow, fast, aliases={"hedged": ["slow:big", "fake:small"]})
    router.set_policy("hedged", RoutingPolicy(hedge=HedgePolicy(delay=0.05, budget=1.0)))
    async with client_for(router, settings_for(tmp_path)) as client:
        url = await _session(client, model="hedged")
        reply = (await client.post(f"{url}/messages", json={"content": "hi"})).json()
        stored = (await client.get(f"{url}/messages")).json()["data"][-1]
    assert reply["provider"] == "fake" and slow.cancelled == 1
    loser, winner = reply["attempts"]
    assert (loser["outcome"], loser["usageEstimated"], winner["outcome"]) == ("cancelled", True, "ok")
    assert reply["totalUsage"]["totalTokens"] == reply["usage"]["totalTokens"] + loser["usage"]["totalTokens"]
    assert stored["totalUsage"] == reply["totalUsage"]


async def test_fallback_models_list_is_tried_in_order(tmp_path: Path) -> None:
    down = errors.ProviderUnavailableError("down", status=503)
    a, b, c = EchoProvider("a", [Step(error=down)]), EchoProvider("b", [Step(error=down)]), EchoProvider("c")
    async with client_for(make_router(a, b, c), settings_for(tmp_path)) as client:
        url = await _session(client, model="a:m", config={"fallbackModels": ["b:m", {"provider": "c", "modelId": "m"}]})
        r = await client.post(f"{url}/messages", json={"content": "hi"})
    assert [x["provider"] for x in r.json()["attempts"]] == ["a", "b", "c"]


async def test_a_failed_call_stores_the_user_message_and_the_error_then_recovers(tmp_path: Path) -> None:
    fake = EchoProvider("fake", [Step(error=errors.TimeoutError("slow", provider="fake", model="small"))])
    async with client_for(make_router(fake), settings_for(tmp_path)) as client:
        url = await _session(client)
        failed = await client.post(f"{url}/messages", json={"content": "first"})
        assert failed.status_code == 504
        error = failed.json()["error"]
        assert error["code"] == "all_candidates_failed"
        assert error["details"]["sessionState"] == "error"
        assert error["details"]["attempts"][0]["error"] == "TimeoutError"
        assert error["details"]["lastError"]["code"] == "timeout"
        assert failed.headers["x-polyroute-attempts"] == "fake:small=error(TimeoutError)"
        session = (await client.get(url)).json()
        assert session["state"] == "error"
        assert session["lastError"]["code"] == "all_candidates_failed"
        stored = (await client.get(f"{url}/messages")).json()["data"]
        assert [(m["role"], m["content"], m["status"]) for m in stored] == [("user", "first", "error")]
        assert stored[0]["error"]["code"] == "all_candidates_failed"
        assert stored[0]["messageId"] == error["details"]["userMessageIds"][0]

        ok = await client.post(f"{url}/messages", json={"content": "second"})
        assert ok.status_code == 200
        assert ok.json()["state"] == "active"
        assert (await client.get(url)).json()["state"] == "active"
        # the failed message is kept for the record but not sent to the model again
        assert [m.text for m in _last_request(fake).messages] == ["second"]
        stored = (await client.get(f"{url}/messages")).json()["data"]
        assert [(m["seq"], m["content"]) for m in stored] == [(1, "first"), (2, "second"), (3, "echo: second")]


async def test_a_bad_request_upstream_is_400_and_not_retried(tmp_path: Path) -> None:
    first = EchoProvider(
        "fake", [Step(error=errors.ContextLengthExceededError("too long", provider="fake", status=400))]
    )
    backup = EchoProvider("backup")
    async with client_for(make_router(first, backup), settings_for(tmp_path)) as client:
        url = await _session(client, config={"fallbackModel": "backup:m"})
        r = await client.post(f"{url}/messages", json={"content": "x"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert backup.calls == []


async def test_message_list_pages_in_order(client: httpx2.AsyncClient) -> None:
    url = await _session(client)
    for i in range(3):
        await client.post(f"{url}/messages", json={"content": f"m{i}"})
    seen = []
    cursor = None
    while True:
        page = (
            await client.get(f"{url}/messages", params={"limit": "4", **({"cursor": cursor} if cursor else {})})
        ).json()
        seen += [(m["seq"], m["content"]) for m in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [(1, "m0"), (2, "echo: m0"), (3, "m1"), (4, "echo: m1"), (5, "m2"), (6, "echo: m2")]
    assert (await client.get(url)).json()["messageCount"] == 6


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "(body)"),
        ({"content": ""}, "content"),
        ({"role": "assistant", "content": "x"}, "role"),
        ({"role": "tool", "content": "x"}, "(body)"),
        ({"content": 5}, "content"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "content": "y"}, "(body)"),
        ({"content": "x" * 101}, "content"),
    ],
)
async def test_invalid_messages_are_422(tmp_path: Path, body: object, path: str) -> None:
    async with client_for(make_router(EchoProvider("fake")), settings_for(tmp_path, maxMessageChars=100)) as client:
        url = await _session(client)
        r = await client.post(f"{url}/messages", json=body)
        assert r.status_code == 422, r.text
        assert path in [e["path"] for e in r.json()["error"]["details"]["errors"]]
        assert (await client.get(f"{url}/messages")).json()["data"] == []


async def test_tool_calls_round_trip(tmp_path: Path) -> None:
    from polyroute.types import ToolCall

    call = ToolCall(id="call_1", name="lookup", arguments={"q": "x"}, raw_arguments='{"q":"x"}')
    fake = EchoProvider("fake", [Step(tokens=[], tool_calls=[call])])

    async def chat_with_tools(model: str, request: ChatRequest, limits: object) -> object:
        from polyroute.types import ChatResponse, Message

        fake.calls.append((model, request))
        step = fake._next()
        return ChatResponse(
            message=Message.assistant("".join(step.tokens) or None, tool_calls=step.tool_calls or None),
            finish_reason="tool_calls" if step.tool_calls else "stop",
            provider="fake",
            model=model,
        )

    fake.chat = chat_with_tools  # type: ignore[method-assign]
    async with client_for(make_router(fake), settings_for(tmp_path)) as client:
        url = await _session(client, tools=[{"name": "lookup", "parameters": {"type": "object"}}])
        r = await client.post(f"{url}/messages", json={"content": "look it up"})
        assert r.json()["finishReason"] == "tool_calls"
        assert r.json()["toolCalls"] == [
            {"id": "call_1", "name": "lookup", "arguments": {"q": "x"}, "rawArguments": '{"q":"x"}'}
        ]
        assert _last_request(fake).tools is not None
        r = await client.post(f"{url}/messages", json={"role": "tool", "toolCallId": "call_1", "content": "found"})
        assert r.status_code == 200
        sent = _last_request(fake).messages
        assert [(m.role, m.tool_call_id) for m in sent] == [("user", None), ("assistant", None), ("tool", "call_1")]
        assert sent[1].tool_calls is not None
        assert sent[1].tool_calls[0].id == "call_1"


async def test_at_most_max_history_messages_are_read(tmp_path: Path) -> None:
    fake = EchoProvider("fake")
    async with client_for(make_router(fake), settings_for(tmp_path, maxHistoryMessages=2)) as client:
        url = await _session(client)
        for i in range(4):
            await client.post(f"{url}/messages", json={"content": f"m{i}"})
    assert [m.text for m in _last_request(fake).messages] == ["m2", "echo: m2", "m3"]
