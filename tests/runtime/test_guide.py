"""The guide's three curl calls, verbatim, against a real server whose OpenAI is failing.

The server runs under uvicorn on 127.0.0.1 with the real OpenAI and Gemini provider clients;
OpenAI points at a local fake that fails the way the guide lists (5xx, 429, timeout, refused)
or has no key at all, and Gemini points at a local fake answering in Gemini's wire format.
The same client calls must succeed and say that Gemini answered.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from fakes.gemini_server import GeminiFake
from fakes.openai_server import OpenAIFake, error_reply, rate_limited
from fakes.upstream import FakeUpstream, Recorded, Reply
from polyroute.providers.gemini import GeminiProvider
from polyroute.providers.openai import OpenAIProvider
from polyroute.router import Router
from polyroute.runtime import create_app
from runtime.support import ServerThread, free_port, settings_for

# the guide's commands, exactly as a user types them (hence the long lines)
GUIDE = [
    """curl -X POST http://127.0.0.1:8080/agents -H "Content-Type: application/json" -d '{"name": "support-bot", "description": "Answers support questions", "model": "openai:gpt-4o-mini", "tools": [], "config": {"fallbackModel": "gemini:flash-1.5"}}'""",  # noqa: E501
    """curl -X POST http://127.0.0.1:8080/agents/$AGENT_ID/sessions -H "Content-Type: application/json" -d '{"userId": "user-42", "metadata": {"channel": "web"}}'""",  # noqa: E501
    """curl -X POST http://127.0.0.1:8080/agents/$AGENT_ID/sessions/$SESSION_ID/messages -H "Content-Type: application/json" -d '{"role": "user", "content": "Recommend a cheap, fast model for a small internal tool."}'""",  # noqa: E501
]

GEMINI_KEY = "gemini-test-key-123"
OPENAI_KEY = "sk-openai-test-456"


def curl(command: str, base: str, variables: dict[str, str]) -> httpx2.Request:
    """The HTTP request a ``curl -X ... -H ... -d ...`` command line sends."""
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    args = shlex.split(command)
    assert args[0] == "curl"
    method, url, headers, body = "GET", "", {}, b""
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "-X":
            method, i = args[i + 1], i + 2
        elif arg == "-H":
            name, _, value = args[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif arg in ("-d", "--data"):
            body, i = args[i + 1].encode(), i + 2
        else:
            url, i = arg, i + 1
    return httpx2.Request(method, url.replace("http://127.0.0.1:8080", base), headers=headers, content=body)


async def _never_answer(request: Recorded) -> Reply:
    await asyncio.sleep(30)
    return Reply(500)


FAILURES: dict[str, Any] = {
    "5xx": lambda request: error_reply(503, "The server is overloaded or not ready yet.", "server_error"),
    "429": lambda request: rate_limited({"retry-after": "20"}),
    "timeout": _never_answer,
    "refused": None,  # nothing listens on the port
    "no key": None,  # OPENAI_API_KEY removed
}


@pytest.fixture
def gemini() -> Iterator[FakeUpstream]:
    with FakeUpstream(GeminiFake(api_key=GEMINI_KEY)) as upstream:
        yield upstream


def _router(failure: str, openai_url: str, gemini_url: str) -> Router:
    router = Router(timeout=20, provider_timeout=1.0)
    router.register(
        OpenAIProvider(
            api_key=None if failure == "no key" else OPENAI_KEY, base_url=f"{openai_url}/v1", base_url_env=None
        )
    )
    router.register(GeminiProvider(api_key=GEMINI_KEY, base_url=gemini_url))
    return router


@pytest.mark.parametrize("failure", list(FAILURES))
def test_guide_calls_succeed_through_the_fallback(failure: str, gemini: FakeUpstream, tmp_path: Path) -> None:
    handler = FAILURES[failure]
    with FakeUpstream(handler or OpenAIFake(OPENAI_KEY)) as openai_upstream:
        openai_url = f"http://127.0.0.1:{free_port()}" if failure == "refused" else openai_upstream.url
        settings = settings_for(tmp_path, port=free_port())
        app = create_app(_router(failure, openai_url, gemini.url), settings)
        with ServerThread(app, settings) as server, httpx2.Client(timeout=30) as client:
            ids: dict[str, str] = {}
            created = client.send(curl(GUIDE[0], server.url, ids))
            assert created.status_code == 201, created.text
            ids["AGENT_ID"] = created.json()["agentId"]
            session = client.send(curl(GUIDE[1], server.url, ids))
            assert session.status_code == 201, session.text
            assert {"sessionId", "agentId", "state", "createdAt"} <= set(session.json())
            ids["SESSION_ID"] = session.json()["sessionId"]
            reply = client.send(curl(GUIDE[2], server.url, ids))

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["provider"] == "gemini"
    assert body["model"] == "flash-1.5"
    assert reply.headers["x-polyroute-provider"] == "gemini"
    assert body["content"] == "Recommend a cheap, fast model for a small internal tool."  # the Gemini fake echoes
    assert body["state"] == "active"
    first, last = body["attempts"][0], body["attempts"][-1]
    assert (first["provider"], last["provider"], last["outcome"]) == ("openai", "gemini", "ok")
    assert first["outcome"] == ("skipped" if failure == "no key" else "error")
    called = [r for r in openai_upstream.requests if r.path == "/v1/chat/completions"]
    assert len(called) == (0 if failure in ("refused", "no key") else 1)
    gemini_call = gemini.requests[-1]
    assert gemini_call.path == "/v1beta/models/flash-1.5:generateContent"
    assert gemini_call.headers["x-goog-api-key"] == GEMINI_KEY
    assert gemini_call.json()["contents"][-1]["parts"][0]["text"].startswith("Recommend")


def test_guide_message_streams_through_the_fallback(gemini: FakeUpstream, tmp_path: Path) -> None:
    with FakeUpstream(FAILURES["5xx"]) as openai_upstream:
        settings = settings_for(tmp_path, port=free_port())
        app = create_app(_router("5xx", openai_upstream.url, gemini.url), settings)
        with ServerThread(app, settings) as server, httpx2.Client(timeout=30) as client:
            ids: dict[str, str] = {}
            ids["AGENT_ID"] = client.send(curl(GUIDE[0], server.url, ids)).json()["agentId"]
            ids["SESSION_ID"] = client.send(curl(GUIDE[1], server.url, ids)).json()["sessionId"]
            request = curl(GUIDE[2], server.url, ids)
            request.headers["Accept"] = "text/event-stream"
            text = client.send(request).text
    events = [block for block in text.split("\n\n") if block.strip()]
    tokens = [orjson.loads(e.split("data: ", 1)[1])["delta"] for e in events if e.startswith("event: token")]
    assert "".join(tokens) == "Recommend a cheap, fast model for a small internal tool."
    assert len(tokens) > 1
    assert events[-1].startswith("event: end")
    final = orjson.loads(events[-1].split("data: ", 1)[1])
    assert final["provider"] == "gemini"
    assert final["content"] == "".join(tokens)
