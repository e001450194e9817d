"""/v1: OpenAI-compatible shapes, checked with raw HTTP and with the official openai SDK."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest

from fakes.scripted import Step
from polyroute import errors
from polyroute.runtime import create_app
from runtime.support import EchoProvider, ServerThread, free_port, make_router, settings_for

USER = [{"role": "user", "content": "say hi"}]


def data_lines(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


async def test_chat_completion_has_openai_shape(client: httpx2.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions", json={"model": "fast", "messages": USER, "user": "ignored", "seed": 1}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "fake:small"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: say hi", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"]["prompt_tokens"] == 3
    assert body["usage"]["total_tokens"] == 3 + body["usage"]["completion_tokens"]
    assert r.headers["x-polyroute-provider"] == "fake"
    assert r.headers["x-polyroute-attempts"].startswith("fake:") and r.headers["x-polyroute-attempts"].endswith("=ok")


async def test_messages_are_mapped_from_openai_roles(client: httpx2.AsyncClient, fake: EchoProvider) -> None:
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "fake:small",
            "messages": messages,
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "max_completion_tokens": 9,
            "stop": "END",
            "response_format": {"type": "json_object"},
        },
    )
    assert r.status_code == 200, r.text
    request = fake.calls[-1][1]
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    assert request.messages[0].content == "be brief"
    image = request.messages[1].content[1]
    assert (image.data, image.media_type) == ("AAAA", "image/png")
    assert request.messages[2].tool_calls[0].arguments == {"a": 1}
    assert request.messages[3].tool_call_id == "c1"
    assert request.tools[0].name == "f"
    assert request.tool_choice.name == "f"
    assert (request.max_tokens, request.stop, request.response_format.type) == (9, ["END"], "json_object")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"model": "nope", "messages": USER}, "model"),
        ({"model": "fake:x", "messages": USER, "fallbacks": ["fake:y", "unknown"]}, "fallbacks.1"),
        ({"model": "fake:x", "messages": []}, "messages"),
        ({"model": "fake:x", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        (
            {"model": "fake:x", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages.0.content.0.type",
        ),
        ({"model": "fake:x", "messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
        (
            {
                "model": "fake:x",
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{"}}]}
                ],
            },
            "messages.0.tool_calls.0.function.arguments",
        ),
        ({"model": "fake:x", "messages": USER, "n": 2}, "n"),
        ({"model": "fake:x", "messages": USER, "temperature": 3}, "temperature"),
        ({"model": "fake:x", "messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
async def test_bad_chat_requests_are_422_with_paths(client: httpx2.AsyncClient, body: dict[str, Any], path: str) -> None:
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 422, r.text
    assert path in [e["path"] for e in r.json()["error"]["details"]["errors"]]


async def test_stream_has_openai_chunks_usage_and_done(client: httpx2.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": "fast",
            "messages": USER,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = data_lines(r.text)
    assert lines[-1] == "[DONE]"
    chunks = [orjson.loads(x) for x in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: say hi"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage_field(client: httpx2.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "fast", "messages": USER, "stream": True})
    chunks = [orjson.loads(x) for x in data_lines(r.text)[:-1]]
    assert all("usage" not in c and c["choices"] for c in chunks)


async def test_stream_failing_before_the_first_token_is_a_plain_http_error(tmp_path: Path) -> None:
    from runtime.support import client_for

    fake = EchoProvider("fake", [Step(error=errors.TimeoutError("slow", provider="fake"))])
    async with client_for(make_router(fake), settings_for(tmp_path)) as client:
        r = await client.post("/v1/chat/completions", json={"model": "fake:x", "messages": USER, "stream": True})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "all_candidates_failed"


async def test_stream_headers_name_the_streaming_candidate_and_what_failed_before_it(tmp_path: Path) -> None:
    from runtime.support import client_for

    down = EchoProvider("down", [Step(error=errors.ProviderUnavailableError("boom", provider="down", status=503))])
    body = {"model": "down:x", "fallbacks": ["fake:small"], "messages": USER, "stream": True}
    async with client_for(make_router(down, EchoProvider("fake")), settings_for(tmp_path)) as client:
        r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["x-polyroute-provider"] == "fake"
    assert r.headers["x-polyroute-attempts"] == "down:x=error(ProviderUnavailableError 503), fake:small=streaming"


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings(client: httpx2.AsyncClient, encoding: str) -> None:
    r = await client.post(
        "/v1/embeddings", json={"model": "fake:emb", "input": ["a", "bbb"], "encoding_format": encoding}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    vectors = [d["embedding"] for d in body["data"]]
    if encoding == "base64":
        vectors = [list(struct.unpack("<2f", base64.b64decode(v))) for v in vectors]
    assert vectors == [[1.0, 0.0], [3.0, 1.0]]
    assert r.headers["x-polyroute-provider"] == "fake"


async def test_models_lists_aliases_and_their_targets(client: httpx2.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids[:2] == ["fast", "fake:small"]
    assert body["providers"]["fake"]["status"] == "available"
    assert (await client.get("/v1/models/fast")).json()["owned_by"] == "polyroute"
    assert (await client.get("/v1/models/fake:anything")).json()["owned_by"] == "fake"
    assert (await client.get("/v1/models/other:thing")).status_code == 404


# --------------------------------------------------------------------------- the official SDK


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    settings = settings_for(tmp_path, port=free_port(), apiKeys=["pr-sdk-key-123456"])
    with ServerThread(create_app(make_router(EchoProvider("fake")), settings), settings) as running:
        yield running


def sdk(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="pr-sdk-key-123456", max_retries=0)


def test_openai_sdk_chat(server: ServerThread) -> None:
    completion = sdk(server).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "from the sdk"}]
    )
    assert completion.choices[0].message.content == "echo: from the sdk"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert completion.model == "fake:small"


def test_openai_sdk_stream(server: ServerThread) -> None:
    stream = sdk(server).chat.completions.create(
        model="fake:small",
        messages=[{"role": "user", "content": "streamed via sdk"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == "echo: streamed via sdk"
    assert usage is not None and usage.completion_tokens == 4


def test_openai_sdk_embeddings_and_models(server: ServerThread) -> None:
    client = sdk(server)
    result = client.embeddings.create(model="fake:emb", input=["x", "yy"])  # the SDK asks for base64
    assert [d.embedding for d in result.data] == [[1.0, 0.0], [2.0, 1.0]]
    assert "fast" in [m.id for m in client.models.list()]


def test_openai_sdk_sees_errors_as_its_own_exceptions(server: ServerThread) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        sdk(server).chat.completions.create(model="no-such-alias", messages=[{"role": "user", "content": "x"}])
    assert "no-such-alias" in info.value.message
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_openai_sdk_raises_when_a_stream_breaks_after_tokens(tmp_path: Path) -> None:
    broken = errors.StreamInterruptedError("dropped", provider="fake", model="small")
    fake = EchoProvider("fake", [Step(tokens=["par", "tial"], error=broken, fail_after=1)])
    settings = settings_for(tmp_path, port=free_port())
    with ServerThread(create_app(make_router(fake), settings), settings) as running:
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="fake:small", messages=[{"role": "user", "content": "x"}], stream=True
        )
        seen = []
        with pytest.raises(openai.APIError, match="dropped"):
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.append(chunk.choices[0].delta.content)
    assert seen == ["par"]
