"""The native Ollama provider against a local server speaking Ollama's documented wire format."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import orjson
import pytest

from fakes.ollama_server import (
    chat_reply,
    chat_stream,
    done_line,
    embed_reply,
    error_reply,
    message_line,
    ndjson_reply,
    rechunk,
)
from fakes.upstream import FakeUpstream, Recorded, Reply
from polyroute import errors
from polyroute.providers.base import CallLimits
from polyroute.providers.ollama import NDJSONSplitter, OllamaProvider, base_url_from_env, parse_host
from polyroute.router.router import Router
from polyroute.types import (
    ChatRequest,
    ChatStreamEvent,
    EmbeddingRequest,
    ImagePart,
    Message,
    TextPart,
    Tool,
    ToolCall,
)

LIMITS = CallLimits(connect=5.0, read=5.0)
WEATHER = Tool(
    name="get_current_weather",
    description="Get the current weather for a location",
    parameters={"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)
CALL = {"function": {"name": "get_current_weather", "arguments": {"location": "Paris, FR", "format": "celsius"}}}


@pytest.fixture
def provider(upstream: FakeUpstream) -> Iterator[OllamaProvider]:
    yield OllamaProvider(base_url=upstream.url)


def serve(upstream: FakeUpstream, reply: Reply) -> None:
    upstream.handler = lambda request: reply


def ask(text: str = "why is the sky blue?", **kw: Any) -> ChatRequest:
    return ChatRequest(model="ollama:llama3.2", messages=[Message.user(text)], **kw)


async def events_of(provider: OllamaProvider, request: ChatRequest) -> list[ChatStreamEvent]:
    return [event async for event in provider.stream("llama3.2", request, LIMITS)]


# --------------------------------------------------------------------------- request mapping


async def test_chat_request_maps_options_format_and_messages(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, chat_reply())
    request = ChatRequest(
        model="ollama:llama3.2",
        messages=[Message.system("be brief"), Message.user("hi"), Message.assistant("hello")],
        temperature=0.3,
        top_p=0.9,
        max_tokens=64,
        stop=["\n\n"],
        response_format={"type": "json_object"},
    )
    await provider.chat("llama3.2", request, LIMITS)
    sent: Recorded = upstream.requests[0]
    assert (sent.method, sent.path) == ("POST", "/api/chat")
    assert "authorization" not in sent.headers
    assert sent.json() == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
        "stream": False,
        "options": {"temperature": 0.3, "top_p": 0.9, "num_predict": 64, "stop": ["\n\n"]},
        "format": "json",
    }


async def test_json_schema_tools_images_and_tool_results(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, chat_reply())
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    call = ToolCall(id="call_1", name="get_current_weather", arguments={"location": "Paris"})
    request = ChatRequest(
        model="ollama:llava",
        messages=[
            Message.user([TextPart(text="what is this?"), ImagePart(data="iVBORw0KGgo=", media_type="image/png")]),
            Message.user([ImagePart(url="data:image/jpeg;base64,/9j/4AAQ")]),
            Message.assistant(tool_calls=[call]),
            Message.tool("call_1", "22 degrees"),
        ],
        tools=[WEATHER],
        response_format={"type": "json_schema", "json_schema": schema},
    )
    await provider.chat("llava", request, LIMITS)
    body = upstream.requests[0].json()
    assert body["format"] == schema
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_current_weather",
                "description": "Get the current weather for a location",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    first, second, assistant, tool = body["messages"]
    assert first == {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}
    assert second == {"role": "user", "content": "", "images": ["/9j/4AAQ"]}
    assert assistant["tool_calls"] == [
        {"function": {"name": "get_current_weather", "arguments": {"location": "Paris"}}}
    ]
    assert tool == {"role": "tool", "content": "22 degrees", "tool_name": "get_current_weather"}
    assert "options" not in body


async def test_unsupported_requests_fail_before_sending(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    remote_image = ask(tools=None)
    remote_image.messages = [Message.user([ImagePart(url="https://example.com/cat.png")])]
    with pytest.raises(errors.UnsupportedFeatureError, match="base64"):
        await provider.chat("llava", remote_image, LIMITS)
    with pytest.raises(errors.UnsupportedFeatureError):
        await provider.chat("llama3.2", ask(tools=[WEATHER], tool_choice="required"), LIMITS)
    none = provider.payload("llama3.2", ask(tools=[WEATHER], tool_choice="none"), stream=False)
    assert "tools" not in none
    assert upstream.requests == []


# --------------------------------------------------------------------------- non-streaming answers


async def test_chat_answer_text_finish_and_usage(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, chat_reply("Hello! How are you today?", prompt_eval_count=26, eval_count=298))
    resp = await provider.chat("llama3.2", ask(), LIMITS)
    assert resp.text == "Hello! How are you today?"
    assert resp.finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (26, 298, 324)
    assert (resp.provider, resp.model) == ("ollama", "llama3.2")
    serve(upstream, chat_reply("cut", done_reason="length"))
    assert (await provider.chat("llama3.2", ask(), LIMITS)).finish_reason == "length"


async def test_tool_calls_get_parsed_arguments_and_stable_ids(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    other = {"function": {"name": "get_current_weather", "arguments": {"location": "Oslo"}}}
    serve(upstream, chat_reply("", tool_calls=[CALL, other]))
    first = await provider.chat("llama3.2", ask(tools=[WEATHER]), LIMITS)
    again = await provider.chat("llama3.2", ask(tools=[WEATHER]), LIMITS)
    calls = first.message.tool_calls
    assert calls is not None and len(calls) == 2
    assert calls[0].name == "get_current_weather"
    assert calls[0].arguments == {"location": "Paris, FR", "format": "celsius"}
    assert orjson.loads(calls[0].raw_arguments) == calls[0].arguments
    assert first.finish_reason == "tool_calls"
    assert calls[0].id != calls[1].id and calls[0].id.startswith("call_")
    assert [c.id for c in calls] == [c.id for c in again.message.tool_calls or []]
    serve(upstream, chat_reply("", tool_calls=[{"id": "call_xyz", **CALL}]))
    assert (await provider.chat("llama3.2", ask(), LIMITS)).message.tool_calls[0].id == "call_xyz"  # type: ignore[index]


async def test_malformed_answer_is_typed(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, Reply.json({"model": "llama3.2", "done": True}))
    with pytest.raises(errors.ProviderUnavailableError, match="message"):
        await provider.chat("llama3.2", ask(), LIMITS)
    serve(upstream, chat_reply("", tool_calls=[{"function": {"arguments": {}}}]))
    with pytest.raises(errors.ProviderUnavailableError, match="function name"):
        await provider.chat("llama3.2", ask(), LIMITS)


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (404, "model 'llama9' not found, try pulling it first", errors.ModelNotFoundError),
        (400, "invalid character '}' looking for beginning of value", errors.BadRequestError),
        (500, "the model failed to generate a response", errors.ProviderUnavailableError),
    ],
)
async def test_error_bodies(
    upstream: FakeUpstream, provider: OllamaProvider, status: int, message: str, error: type[Exception]
) -> None:
    serve(upstream, error_reply(status, message))
    with pytest.raises(error) as info:
        await provider.chat("llama9", ask(), LIMITS)
    assert info.value.status == status and info.value.provider_message == message  # type: ignore[attr-defined]
    with pytest.raises(error):
        await events_of(provider, ask())


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("split", [None, 1, 7, 50])
async def test_stream_relays_text_byte_exact_across_any_split(
    upstream: FakeUpstream, provider: OllamaProvider, split: int | None
) -> None:
    pieces = ["The", " sky", " is blue ", "\u00e9t\u00e9 \U0001f44b", "\n\n  ", '\\"quoted"', "."]
    serve(upstream, chat_stream(pieces, split=split, prompt_eval_count=26, eval_count=282))
    events = await events_of(provider, ask())
    assert [e.delta for e in events if e.type == "token"] == pieces
    assert [e.type for e in events][-2:] == ["usage", "end"]
    end = events[-1]
    assert end.finish_reason == "stop"
    assert end.usage is not None and (end.usage.prompt_tokens, end.usage.completion_tokens) == (26, 282)
    assert upstream.requests[0].json()["stream"] is True


async def test_stream_through_the_router(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, chat_stream(["Hel", "lo"], done_reason="length"))
    router = Router(timeout=10)
    router.register(provider)
    events = [e async for e in router.stream(ask())]
    end = events[-1]
    assert end.response is not None and end.response.text == "Hello"
    assert end.finish_reason == "length" and end.response.provider == "ollama"


async def test_stream_tool_calls(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    body = message_line("", tool_calls=[CALL]) + done_line(eval_count=33)
    serve(upstream, ndjson_reply(rechunk(body, 5)))
    events = await events_of(provider, ask(tools=[WEATHER]))
    calls = [e.tool_call for e in events if e.type == "tool_call"]
    assert len(calls) == 1 and calls[0] is not None
    assert calls[0].arguments == {"location": "Paris, FR", "format": "celsius"}
    assert events[-1].finish_reason == "tool_calls"
    assert not [e for e in events if e.type == "token"]


async def test_final_line_without_newline_still_counts(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, ndjson_reply([message_line("ok"), done_line().rstrip(b"\n")]))
    events = await events_of(provider, ask())
    assert events[-1].type == "end"


async def test_crlf_and_blank_lines_are_tolerated(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    body = message_line("a").replace(b"\n", b"\r\n") + b"\n\r\n" + done_line()
    serve(upstream, ndjson_reply(rechunk(body, 3)))
    events = await events_of(provider, ask())
    assert [e.delta for e in events if e.type == "token"] == ["a"] and events[-1].type == "end"


async def test_mid_stream_error_line(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    body = message_line(" Yes") + message_line(".") + b'{"error":"an error was encountered while running the model"}\n'
    serve(upstream, ndjson_reply([body]))
    seen: list[str] = []
    with pytest.raises(errors.StreamInterruptedError) as info:
        async for event in provider.stream("llama3.2", ask(), LIMITS):
            seen.append(event.delta)
    assert seen == [" Yes", "."]
    assert info.value.kind == "provider_error"
    assert info.value.provider_message == "an error was encountered while running the model"


async def test_router_reports_mid_stream_error_after_output(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, ndjson_reply([message_line("Hi"), b'{"error":"boom"}\n']))
    router = Router(timeout=10)
    router.register(provider)
    types: list[str] = []
    with pytest.raises(errors.StreamInterruptedError):
        async with aclosing(router.stream(ask())) as stream:
            async for event in stream:
                types.append(event.type)
    assert types == ["token", "error"]


@pytest.mark.parametrize(
    "reply",
    [
        chat_stream(["The", " sky"], done=False),  # clean end of body, no done line
        chat_stream(["The"], done=False, tail=b'{"model":"llama3.2","mess'),  # last line cut in half
    ],
    ids=["no-done-line", "cut-line"],
)
async def test_truncated_stream(upstream: FakeUpstream, provider: OllamaProvider, reply: Reply) -> None:
    serve(upstream, reply)
    with pytest.raises(errors.StreamInterruptedError) as info:
        await events_of(provider, ask())
    assert info.value.kind == "truncated"


async def test_dropped_connection(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, chat_stream(["The"], done=False, disconnect=True))
    with pytest.raises(errors.StreamInterruptedError) as info:
        await events_of(provider, ask())
    assert info.value.kind in ("disconnect", "truncated")


@pytest.mark.parametrize("line", [b"not json at all\n", b"[1, 2]\n"], ids=["garbage", "not-an-object"])
async def test_malformed_line(upstream: FakeUpstream, provider: OllamaProvider, line: bytes) -> None:
    serve(upstream, ndjson_reply([message_line("ok"), line, done_line()]))
    with pytest.raises(errors.StreamInterruptedError) as info:
        await events_of(provider, ask())
    assert info.value.kind == "malformed"


# --------------------------------------------------------------------------- embeddings


async def test_embed(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    vectors = [[0.010071029, -0.0017594862, 0.05007221], [-0.0098027075, 0.06042469, 0.025257962]]
    serve(upstream, embed_reply(vectors, prompt_eval_count=12))
    router = Router(timeout=10)
    router.register(provider)
    resp = await router.embed(EmbeddingRequest(model="ollama:all-minilm", input=["sky", "grass"], dimensions=3))
    assert resp.vectors == vectors and resp.usage.prompt_tokens == 12
    sent = upstream.requests[0]
    assert sent.path == "/api/embed"
    assert sent.json() == {"model": "all-minilm", "input": ["sky", "grass"], "dimensions": 3}


async def test_embed_errors(upstream: FakeUpstream, provider: OllamaProvider) -> None:
    serve(upstream, error_reply(404, "model 'nomic' not found"))
    with pytest.raises(errors.ModelNotFoundError):
        await provider.embed("nomic", ["x"], LIMITS)
    serve(upstream, Reply.json({"embedding": [0.1]}))
    with pytest.raises(errors.ProviderUnavailableError, match="embeddings"):
        await provider.embed("nomic", ["x"], LIMITS)


# --------------------------------------------------------------------------- configuration & framing


@pytest.mark.parametrize(
    ("value", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("1.2.3.4", "http://1.2.3.4:11434"),
        (":56789", "http://127.0.0.1:56789"),
        ("http://1.2.3.4", "http://1.2.3.4:80"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:56789/path/", "https://example.com:56789/path"),
        ("example.com/path", "http://example.com:11434/path"),
        ("[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_parse_host(value: str | None, url: str) -> None:
    assert parse_host(value) == url


def test_base_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert base_url_from_env({}) == "http://127.0.0.1:11434"
    assert base_url_from_env({"OLLAMA_HOST": "0.0.0.0:9999"}) == "http://0.0.0.0:9999"
    both = {"OLLAMA_HOST": "a:1", "OLLAMA_BASE_URL": "http://b:2"}
    assert base_url_from_env(both) == "http://b:2"
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:4321")
    provider = OllamaProvider()
    assert provider.base_url == "http://127.0.0.1:4321"
    assert provider.missing_config() is None
    named = OllamaProvider.from_env(name="ollama-lan", environ={"OLLAMA_HOST": "10.0.0.5", "OLLAMA_API_KEY": "k"})
    assert (named.name, named.base_url, named.auth_headers()) == (
        "ollama-lan",
        "http://10.0.0.5:11434",
        {"authorization": "Bearer k"},
    )


def test_ndjson_splitter_keeps_lines_whole() -> None:
    splitter = NDJSONSplitter()
    data = b'{"a":"\xc3\xa9"}\n\n{"b":2}\r\n{"c":'
    lines = [line for piece in rechunk(data, 1) for line in splitter.feed(piece)]
    assert lines == [b'{"a":"\xc3\xa9"}', b'{"b":2}']
    assert splitter.close() == b'{"c":'
    assert splitter.close() == b""
