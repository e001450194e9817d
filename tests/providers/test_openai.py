"""OpenAIProvider against a local server that speaks the OpenAI Chat Completions wire format."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fakes.openai_server import (
    DONE,
    OpenAIFake,
    chunk,
    completion,
    completion_reply,
    embeddings,
    error_body,
    error_reply,
    every_byte,
    rate_limited,
    sse,
    stream_events,
    stream_reply,
    tool_call,
    tool_call_chunks,
    usage,
    usage_chunk,
)
from fakes.upstream import FakeUpstream, Pause, Reply
from polyroute import Router, errors
from polyroute.providers import Provider
from polyroute.providers._openai_wire import StreamState
from polyroute.providers._sse import SSEDecoder
from polyroute.providers.base import CallLimits
from polyroute.providers.openai import OPENAI_CAPABILITIES, OpenAIProvider
from polyroute.types import (
    ChatRequest,
    ChatStreamEvent,
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)

KEY = "sk-test-5f3b9c1e-very-secret"
MODEL = "gpt-4o-mini"
LIMITS = CallLimits(connect=5.0, read=10.0)


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model=f"openai:{MODEL}", messages=list(messages) or [Message.user("hi")], **kw)


@pytest.fixture
async def openai(upstream: FakeUpstream) -> AsyncIterator[OpenAIProvider]:
    upstream.handler = OpenAIFake(api_key=KEY)
    provider = OpenAIProvider(api_key=KEY, base_url=f"{upstream.url}/v1")
    yield provider
    await provider.aclose()


async def collect(provider: OpenAIProvider, request: ChatRequest | None = None) -> list[ChatStreamEvent]:
    return [e async for e in provider.stream(MODEL, request or req(), LIMITS)]


async def collect_until_error(
    provider: OpenAIProvider, request: ChatRequest | None = None
) -> tuple[list[ChatStreamEvent], errors.PolyrouteError]:
    seen: list[ChatStreamEvent] = []
    with pytest.raises(errors.PolyrouteError) as caught:
        async for event in provider.stream(MODEL, request or req(), LIMITS):
            seen.append(event)
    return seen, caught.value


def tokens_of(events: list[ChatStreamEvent]) -> list[str]:
    return [e.delta for e in events if e.type == "token"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- URL, key, config


async def test_chat_posts_to_chat_completions_with_bearer_key(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    response = await openai.chat(MODEL, req(), LIMITS)
    sent = upstream.requests[-1]
    assert (sent.method, sent.path, sent.query) == ("POST", "/v1/chat/completions", "")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json()["model"] == MODEL
    assert (response.provider, response.model, response.text) == ("openai", MODEL, "Hello from the fake.")


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/api/paas/v4"])
async def test_base_url_includes_the_version_segment(upstream: FakeUpstream, suffix: str) -> None:
    upstream.handler = OpenAIFake(api_key=None, prefix=suffix.rstrip("/"))
    provider = OpenAIProvider(api_key=KEY, base_url=upstream.url + suffix)
    await provider.chat(MODEL, req(), LIMITS)
    await provider.embed("text-embedding-3-small", ["a"], LIMITS)
    await provider.aclose()
    assert [r.path for r in upstream.requests] == [
        suffix.rstrip("/") + "/chat/completions",
        suffix.rstrip("/") + "/embeddings",
    ]


async def test_missing_key_is_not_configured_and_sends_nothing(upstream: FakeUpstream) -> None:
    provider = OpenAIProvider(base_url=f"{upstream.url}/v1")
    assert provider.missing_config() == "OPENAI_API_KEY"
    with pytest.raises(errors.NotConfiguredError) as caught:
        await provider.chat(MODEL, req(), LIMITS)
    assert caught.value.env_var == "OPENAI_API_KEY"
    assert "OPENAI_API_KEY" in str(caught.value)
    with pytest.raises(errors.NotConfiguredError):
        await collect(provider)
    with pytest.raises(errors.NotConfiguredError):
        await provider.embed("text-embedding-3-small", ["a"], LIMITS)
    assert upstream.requests == []


def test_constructor_reads_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    provider = OpenAIProvider()
    assert (provider.api_key, provider.base_url, provider.missing_config()) == (KEY, "http://127.0.0.1:9/v1", None)
    explicit = OpenAIProvider(api_key="sk-other", base_url="http://127.0.0.1:10/v1")
    assert (explicit.api_key, explicit.base_url) == ("sk-other", "http://127.0.0.1:10/v1")
    assert OpenAIProvider(api_key="").missing_config() == "OPENAI_API_KEY"


def test_from_env_reads_only_the_given_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-process")
    provider = OpenAIProvider.from_env(environ={"OPENAI_ENDPOINT": "http://127.0.0.1:9/v1", "OPENAI_ORG_ID": "org-1"})
    assert provider.api_key is None
    assert provider.missing_config() == "OPENAI_API_KEY"
    assert provider.base_url == "http://127.0.0.1:9/v1"
    assert provider.client.headers["openai-organization"] == "org-1"
    both = OpenAIProvider.from_env(
        "work", {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://a/v1", "OPENAI_ENDPOINT": "http://b/v1"}
    )
    assert (both.name, both.api_key, both.base_url) == ("work", KEY, "http://a/v1")
    assert OpenAIProvider.from_env(environ={}).base_url == "https://api.openai.com/v1"


async def test_local_server_needs_no_key_and_sends_no_auth_header(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake(api_key=None)
    provider = OpenAIProvider(base_url=f"{upstream.url}/v1", name="local", require_key=False)
    assert provider.missing_config() is None
    assert (await provider.chat("llama3", req(), LIMITS)).text == "Hello from the fake."
    await provider.aclose()
    assert "authorization" not in upstream.requests[-1].headers


async def test_organization_and_extra_headers_are_sent(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake(api_key=KEY)
    provider = OpenAIProvider(KEY, f"{upstream.url}/v1", organization="org-42", headers={"X-Extra": "1"})
    await collect(provider)
    await provider.aclose()
    headers = upstream.requests[-1].headers
    assert (headers["openai-organization"], headers["x-extra"]) == ("org-42", "1")
    assert headers["accept"] == "text/event-stream"


def test_capabilities_and_protocol() -> None:
    provider = OpenAIProvider(api_key=KEY)
    assert isinstance(provider, Provider)
    assert provider.capabilities == OPENAI_CAPABILITIES
    assert all(provider.capabilities.as_dict().values())


# --------------------------------------------------------------------------- request mapping


def test_messages_map_to_openai_roles_parts_and_tool_calls() -> None:
    provider = OpenAIProvider(api_key=KEY)
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}, raw_arguments='{"city":  "Paris"}')
    bare = ToolCall(id="call_2", name="now", arguments={"tz": "UTC"})
    request = req(
        Message.system("Be brief."),
        Message(role="user", name="ana", content="hello"),
        Message.user(
            [
                TextPart(text="What is this?"),
                ImagePart(url="https://example.com/cat.png", detail="low"),
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
            ]
        ),
        Message.assistant(tool_calls=[call, bare]),
        Message.tool("call_1", "18C and sunny", name="get_weather"),
        Message.tool("call_2", "12:00"),
        Message.assistant("It is 18C."),
    )
    assert provider.chat_body(MODEL, request)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello", "name": "ana"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                # the raw argument string is echoed back exactly, spaces included
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":  "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": '{"tz":"UTC"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
        {"role": "assistant", "content": "It is 18C."},
    ]


def test_tools_become_function_definitions() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = req(tools=[Tool(name="get_weather", description="Weather now", parameters=schema), Tool(name="ping")])
    assert OpenAIProvider(api_key=KEY).chat_body(MODEL, request)["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": schema}},
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        (NamedToolChoice(name="get_weather"), {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    request = req(tools=[Tool(name="get_weather")], tool_choice=choice)
    assert OpenAIProvider(api_key=KEY).chat_body(MODEL, request)["tool_choice"] == expected


def test_sampling_fields_are_sent_and_ours_are_not() -> None:
    request = req(
        temperature=0.2,
        top_p=0.9,
        max_tokens=64,
        stop=["\n\n", "END"],
        metadata={"user": "u1"},
        fallbacks=["gemini:gemini-2.0-flash"],
        timeout=5.0,
    )
    body = OpenAIProvider(api_key=KEY).chat_body(MODEL, request)
    assert body == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n\n", "END"],
    }
    assert OpenAIProvider(api_key=KEY).chat_body(MODEL, req(temperature=0.0))["temperature"] == 0.0
    assert OpenAIProvider(api_key=KEY).chat_body(MODEL, req()) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_max_completion_tokens_flag() -> None:
    body = OpenAIProvider(api_key=KEY, max_tokens_param="max_completion_tokens").chat_body(MODEL, req(max_tokens=32))
    assert body["max_completion_tokens"] == 32
    assert "max_tokens" not in body


def test_response_formats() -> None:
    provider = OpenAIProvider(api_key=KEY)
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    as_schema = ResponseFormat(type="json_schema", json_schema=schema, name="verdict", strict=True)
    assert provider.chat_body(MODEL, req(response_format=as_schema))["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": schema, "strict": True},
    }
    as_object = ResponseFormat(type="json_object")
    assert provider.chat_body(MODEL, req(response_format=as_object))["response_format"] == {"type": "json_object"}
    assert "response_format" not in provider.chat_body(MODEL, req(response_format=ResponseFormat()))


def test_stream_body_asks_for_usage_unless_told_not_to() -> None:
    body = OpenAIProvider(api_key=KEY).chat_body(MODEL, req(), stream=True)
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})
    quiet = OpenAIProvider(api_key=KEY, stream_usage=False).chat_body(MODEL, req(), stream=True)
    assert quiet["stream"] is True
    assert "stream_options" not in quiet


async def test_request_body_reaches_the_server(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    request = req(Message.system("s"), Message.user("u"), tools=[Tool(name="t")], tool_choice="required", max_tokens=9)
    await openai.chat(MODEL, request, LIMITS)
    await collect(openai, request)
    assert upstream.requests[0].json() == openai.chat_body(MODEL, request)
    assert upstream.requests[1].json() == openai.chat_body(MODEL, request, stream=True)


# --------------------------------------------------------------------------- non-streaming responses


async def test_response_text_usage_details_and_id(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    counts = usage(120, 40, cached=100, reasoning=32)
    upstream.handler = lambda r: completion_reply("  Two lines\nof text.  ", usage_counts=counts, id="chatcmpl-42")
    response = await openai.chat(MODEL, req(), LIMITS)
    assert response.id == "chatcmpl-42"
    assert response.text == "  Two lines\nof text.  "
    assert response.finish_reason == "stop"
    assert response.message.role == "assistant"
    assert response.usage.model_dump() == {
        "prompt_tokens": 120,
        "completion_tokens": 40,
        "total_tokens": 160,
        "cached_tokens": 100,
        "reasoning_tokens": 32,
    }


async def test_response_tool_calls_keep_raw_arguments(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    raw = '{"city": "Paris",  "days": 3}'
    calls = [tool_call("call_a", "get_weather", raw), tool_call("call_b", "get_time", {})]
    upstream.handler = lambda r: completion_reply(None, tool_calls=calls)
    response = await openai.chat(MODEL, req(), LIMITS)
    assert response.finish_reason == "tool_calls"
    assert response.message.content is None
    first, second = response.message.tool_calls or []
    assert (first.id, first.name, first.arguments, first.raw_arguments) == (
        "call_a",
        "get_weather",
        {"city": "Paris", "days": 3},
        raw,
    )
    assert (second.id, second.name, second.arguments, second.raw_arguments) == ("call_b", "get_time", {}, "{}")


@pytest.mark.parametrize(
    ("wire", "ours"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("function_call", "tool_calls"),
        ("tool_calls", "tool_calls"),
        ("eos", "stop"),
    ],
)
async def test_finish_reasons(upstream: FakeUpstream, openai: OpenAIProvider, wire: str, ours: str) -> None:
    upstream.handler = lambda r: completion_reply("partial", finish_reason=wire)
    assert (await openai.chat(MODEL, req(), LIMITS)).finish_reason == ours


async def test_stop_with_tool_calls_is_tool_calls(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: completion_reply(None, tool_calls=[tool_call("c", "f", {})], finish_reason="stop")
    assert (await openai.chat(MODEL, req(), LIMITS)).finish_reason == "tool_calls"


async def test_filtered_reply_without_content_is_content_filtered(
    upstream: FakeUpstream, openai: OpenAIProvider
) -> None:
    upstream.handler = lambda r: completion_reply(None, finish_reason="content_filter")
    with pytest.raises(errors.ContentFilteredError) as caught:
        await openai.chat(MODEL, req(), LIMITS)
    assert (caught.value.provider, caught.value.model, caught.value.fallback) == ("openai", MODEL, False)


async def test_refusal_is_the_reply_text(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: completion_reply(None, refusal="I can't help with that.")
    assert (await openai.chat(MODEL, req(), LIMITS)).text == "I can't help with that."


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"just text"'])
async def test_malformed_tool_call_arguments_are_unavailable(
    upstream: FakeUpstream, openai: OpenAIProvider, arguments: str
) -> None:
    upstream.handler = lambda r: completion_reply(None, tool_calls=[tool_call("c", "f", arguments)])
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        await openai.chat(MODEL, req(), LIMITS)
    assert "tool call" in caught.value.message
    assert caught.value.retryable


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "object": "chat.completion", "choices": []},
        {"id": "x", "choices": [{"index": 0, "finish_reason": "stop"}]},
        [1, 2, 3],
        {"choices": [{"message": {"role": "assistant", "tool_calls": ["not-an-object"]}}]},
    ],
)
async def test_unreadable_reply_is_unavailable(upstream: FakeUpstream, openai: OpenAIProvider, body: Any) -> None:
    upstream.handler = lambda r: Reply.json(body)
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        await openai.chat(MODEL, req(), LIMITS)
    assert "could not be read" in caught.value.message


async def test_non_json_body_is_unavailable(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: Reply(200, {"content-type": "text/html"}, [b"<html>gateway</html>"])
    with pytest.raises(errors.ProviderUnavailableError):
        await openai.chat(MODEL, req(), LIMITS)


async def test_error_object_in_a_200_reply_is_typed(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: Reply.json(
        error_body("quota exhausted", "insufficient_quota", code="insufficient_quota")
    )
    with pytest.raises(errors.RateLimitedError) as caught:
        await openai.chat(MODEL, req(), LIMITS)
    assert caught.value.provider_message == "quota exhausted"


# --------------------------------------------------------------------------- HTTP errors

HTTP_ERRORS = [
    (400, "invalid_request_error", None, "Invalid value for 'temperature'.", errors.BadRequestError),
    (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
        errors.ContextLengthExceededError,
    ),
    (
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-te****cret.",
        errors.AuthenticationError,
    ),
    (
        403,
        "request_forbidden",
        "unsupported_country_region_territory",
        "Country not supported.",
        errors.PermissionDeniedError,
    ),
    (404, "invalid_request_error", "model_not_found", "The model `gpt-9` does not exist.", errors.ModelNotFoundError),
    (429, "requests", "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini.", errors.RateLimitedError),
    (
        500,
        "server_error",
        None,
        "The server had an error while processing your request.",
        errors.ProviderUnavailableError,
    ),
    (
        503,
        "server_error",
        None,
        "The engine is currently overloaded, please try again later.",
        errors.ProviderUnavailableError,
    ),
]


@pytest.mark.parametrize(("status", "error_type", "code", "message", "expected"), HTTP_ERRORS)
@pytest.mark.parametrize("call", ["chat", "stream", "embed"])
async def test_http_errors_map_to_typed_errors(
    upstream: FakeUpstream,
    openai: OpenAIProvider,
    call: str,
    status: int,
    error_type: str,
    code: str | None,
    message: str,
    expected: type[errors.ProviderError],
) -> None:
    upstream.handler = lambda r: error_reply(status, message, error_type, code=code)
    with pytest.raises(errors.ProviderError) as caught:
        if call == "chat":
            await openai.chat(MODEL, req(), LIMITS)
        elif call == "stream":
            await collect(openai)
        else:
            await openai.embed("text-embedding-3-small", ["a"], LIMITS)
    assert type(caught.value) is expected
    assert (caught.value.status, caught.value.provider_message) == (status, message)
    assert (caught.value.provider, caught.value.model) == (
        "openai",
        MODEL if call != "embed" else "text-embedding-3-small",
    )


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "1", "retry-after-ms": "1500"}, 1.5),
        ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20ms"}, 360.0),
        ({}, None),
    ],
)
async def test_rate_limit_retry_after(
    upstream: FakeUpstream, openai: OpenAIProvider, headers: dict[str, str], seconds: float | None
) -> None:
    upstream.handler = lambda r: rate_limited(headers)
    with pytest.raises(errors.RateLimitedError) as caught:
        await openai.chat(MODEL, req(), LIMITS)
    assert caught.value.retry_after == seconds
    assert caught.value.retryable


@pytest.mark.parametrize("call", ["chat", "stream", "embed"])
async def test_connection_refused_is_unavailable(call: str) -> None:
    provider = OpenAIProvider(api_key=KEY, base_url=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        if call == "chat":
            await provider.chat(MODEL, req(), LIMITS)
        elif call == "stream":
            await collect(provider)
        else:
            await provider.embed("e", ["a"], LIMITS)
    await provider.aclose()
    assert caught.value.retryable
    assert KEY not in str(caught.value)


async def test_key_never_appears_in_errors(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    echo = f"Incorrect API key provided: {KEY}."
    raised: list[errors.PolyrouteError] = []
    for reply in (
        error_reply(401, echo, code="invalid_api_key"),
        stream_reply(
            [sse(chunk({"content": "x"})), sse(error_body(echo, "invalid_request_error", code="invalid_api_key"))]
        ),
        error_reply(500, echo, "server_error"),
    ):
        upstream.handler = lambda r, reply=reply: reply
        with pytest.raises(errors.PolyrouteError) as caught:
            if reply.status == 401:
                await openai.chat(MODEL, req(), LIMITS)
            else:
                await collect(openai)
        raised.append(caught.value)
    assert [type(e) for e in raised] == [
        errors.AuthenticationError,
        errors.AuthenticationError,
        errors.ProviderUnavailableError,
    ]
    for exc in raised:
        for text in (
            str(exc),
            repr(exc),
            exc.message,
            exc.provider_message or "",
            orjson.dumps(exc.details()).decode(),
        ):
            assert KEY not in text
        assert "[redacted]" in (exc.provider_message or "")


# --------------------------------------------------------------------------- streaming


async def test_stream_tokens_usage_and_one_end(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    counts = usage(30, 4, cached=10, reasoning=2)
    upstream.handler = lambda r: stream_reply(stream_events(["Hel", "lo", "!"], usage_counts=counts))
    events = await collect(openai)
    assert [e.type for e in events] == ["token", "token", "token", "usage", "end"]
    assert tokens_of(events) == ["Hel", "lo", "!"]
    assert all((e.provider, e.model) == ("openai", MODEL) for e in events)
    assert events[3].usage is not None
    assert (events[3].usage.prompt_tokens, events[3].usage.cached_tokens, events[3].usage.reasoning_tokens) == (
        30,
        10,
        2,
    )
    end = events[-1]
    assert (end.finish_reason, end.done, end.usage) == ("stop", True, events[3].usage)
    assert end.response is not None
    assert (end.response.id, end.response.text, end.response.finish_reason) == ("chatcmpl-fake0001", "Hello!", "stop")


TRICKY = [
    " leading",
    "trailing ",
    "  both  ",
    "\n",
    "line one\nline two\n",
    "tab\there",
    "crlf\r\nkept",
    "é",
    "世界",
    "🚀 ok",
    " ",
]


async def test_tokens_relay_byte_exact_when_every_byte_is_its_own_read(
    upstream: FakeUpstream, openai: OpenAIProvider
) -> None:
    upstream.handler = lambda r: stream_reply(every_byte(stream_events(TRICKY)))
    events = await collect(openai)
    assert tokens_of(events) == TRICKY
    assert [e.type for e in events][-2:] == ["usage", "end"]


def parse_split(data: bytes, cut: int) -> list[ChatStreamEvent]:
    """What the provider's parser makes of ``data`` delivered in two reads split at ``cut``."""
    decoder, state, out = SSEDecoder(), StreamState("openai", MODEL), []
    for piece in (data[:cut], data[cut:]):
        for event in decoder.feed(piece):
            out += state.feed(event)
    for event in decoder.close():
        out += state.feed(event)
    assert state.done
    return out


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_every_split_point_of_a_realistic_stream_gives_the_same_events(eol: str) -> None:
    calls = tool_call_chunks(0, "call_1", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}'])
    data = "".join(stream_events(["Hé", "llo 世", "界\n", " 🚀"], tool_calls=calls, eol=eol)).encode()
    expected = [(e.type, e.delta, e.tool_call, e.finish_reason) for e in parse_split(data, 0)]
    assert [t for t, *_ in expected] == ["token"] * 4 + ["tool_call", "usage", "end"]
    for cut in range(1, len(data)):
        assert [(e.type, e.delta, e.tool_call, e.finish_reason) for e in parse_split(data, cut)] == expected, cut


async def test_crlf_comments_keepalives_and_multiline_data(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    first = orjson.dumps(chunk({"content": "multi"})).decode()
    head, tail = first.split(',"choices"')
    pieces = [
        ": OPENROUTER PROCESSING\r\n\r\n",
        ":keep-alive\r\n",
        "retry: 3000\r\nid: 7\r\nevent: message\r\n",
        f'data: {head},\r\ndata: "choices"{tail}\r\n\r\n',  # one JSON value over two data lines
        ": ping\r\n\r\n",
        sse(chunk({"content": " line"}), eol="\r\n"),
        sse(chunk({}, finish_reason="stop"), eol="\r\n"),
        sse("[DONE]", eol="\r\n"),
    ]
    upstream.handler = lambda r: stream_reply(pieces)
    events = await collect(openai)
    assert tokens_of(events) == ["multi", " line"]
    assert [e.type for e in events] == ["token", "token", "end"]


async def test_empty_and_null_deltas_are_skipped(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    pieces = [
        sse(chunk({"role": "assistant", "content": ""})),
        sse(chunk({"content": None})),
        sse(chunk({"content": "x"})),
        sse(chunk({})),
        sse(chunk({}, finish_reason="length")),
        DONE,
    ]
    upstream.handler = lambda r: stream_reply(pieces)
    events = await collect(openai)
    assert [(e.type, e.delta) for e in events] == [("token", "x"), ("end", "")]
    assert events[-1].finish_reason == "length"


async def test_two_parallel_tool_calls_are_assembled_by_index(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    a0, *a_rest = tool_call_chunks(0, "call_a", "get_weather", ['{"city":', ' "Paris"', "}"])
    b0, *b_rest = tool_call_chunks(1, "call_b", "get_time", ['{"tz": ', '"Europe/', 'Paris"}'])
    interleaved = [a0, b0, *(c for pair in zip(a_rest, b_rest, strict=True) for c in pair)]
    upstream.handler = lambda r: stream_reply(stream_events(["Checking."], tool_calls=interleaved))
    events = await collect(openai)
    assert [e.type for e in events] == ["token", "tool_call", "tool_call", "usage", "end"]
    calls = [e.tool_call for e in events if e.tool_call is not None]
    assert [(c.id, c.name, c.arguments, c.raw_arguments) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}, '{"city": "Paris"}'),
        ("call_b", "get_time", {"tz": "Europe/Paris"}, '{"tz": "Europe/Paris"}'),
    ]
    end = events[-1]
    assert end.finish_reason == "tool_calls"
    assert end.response is not None
    assert end.response.message.tool_calls == calls


async def test_tool_calls_are_released_at_done_when_no_finish_reason_came(
    upstream: FakeUpstream, openai: OpenAIProvider
) -> None:
    pieces = [sse(c) for c in tool_call_chunks(0, "call_1", "ping", ["{}"])] + [DONE]
    upstream.handler = lambda r: stream_reply(pieces)
    events = await collect(openai)
    assert [e.type for e in events] == ["tool_call", "end"]
    assert events[-1].finish_reason == "tool_calls"


async def test_stream_without_usage_chunk_still_ends_once(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake(api_key=KEY)
    provider = OpenAIProvider(KEY, f"{upstream.url}/v1", stream_usage=False)
    events = await collect(provider)
    await provider.aclose()
    assert "stream_options" not in upstream.requests[-1].json()
    assert [e.type for e in events] == ["token"] * 4 + ["end"]
    assert events[-1].usage is None


async def test_content_filter_in_stream(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: stream_reply(stream_events([], finish_reason="content_filter"))
    _, exc = await collect_until_error(openai)
    assert isinstance(exc, errors.ContentFilteredError)
    upstream.handler = lambda r: stream_reply(stream_events(["Some"], finish_reason="content_filter"))
    events = await collect(openai)
    assert (events[-1].type, events[-1].finish_reason) == ("end", "content_filter")


async def test_stream_ending_without_done_is_truncated(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: stream_reply(stream_events(["Hi", " there"], done=False))
    seen, exc = await collect_until_error(openai)
    assert tokens_of(seen) == ["Hi", " there"]
    assert "end" not in [e.type for e in seen]
    assert isinstance(exc, errors.StreamInterruptedError)
    assert exc.kind == "truncated"


async def test_stream_cut_inside_an_event_is_truncated(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: stream_reply([sse(chunk({"content": "Hi"})), 'data: {"id": "chatcmpl-fake0001", "cho'])
    seen, exc = await collect_until_error(openai)
    assert tokens_of(seen) == ["Hi"]
    assert isinstance(exc, errors.StreamInterruptedError)
    assert exc.kind == "truncated"


async def test_dropped_connection_mid_stream_is_interrupted(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: stream_reply([sse(chunk({"content": "Hi"})), Pause(0.01)], disconnect=True)
    seen, exc = await collect_until_error(openai)
    assert tokens_of(seen) == ["Hi"]
    assert isinstance(exc, errors.StreamInterruptedError)
    assert exc.kind in ("disconnect", "truncated")


@pytest.mark.parametrize(
    "bad",
    [
        'data: {"id": "x", "choices": [\n\n',
        "data: [1, 2, 3]\n\n",
        'data: {"choices": "not-a-list"}\n\n',
        'data: {"choices": [{"delta": {"content": 42}}]}\n\n',
        'data: {"choices": [{"delta": {"tool_calls": ["nope"]}}]}\n\n',
    ],
)
async def test_malformed_chunk_is_interrupted_malformed(
    upstream: FakeUpstream, openai: OpenAIProvider, bad: str
) -> None:
    upstream.handler = lambda r: stream_reply([sse(chunk({"content": "ok"})), bad, *stream_events([])[1:]])
    seen, exc = await collect_until_error(openai)
    assert tokens_of(seen) == ["ok"]
    assert isinstance(exc, errors.StreamInterruptedError)
    assert exc.kind == "malformed"


async def test_malformed_streamed_tool_arguments(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    broken = tool_call_chunks(0, "call_1", "get_weather", ['{"city": ', '"Par'])
    upstream.handler = lambda r: stream_reply(stream_events([], tool_calls=broken))
    seen, exc = await collect_until_error(openai)
    assert seen == []
    assert isinstance(exc, errors.StreamInterruptedError)
    assert (exc.kind, exc.provider, exc.model) == ("malformed", "openai", MODEL)


@pytest.mark.parametrize(
    ("payload", "expected", "status"),
    [
        (error_body("The server had an error.", "server_error"), errors.ProviderUnavailableError, None),
        (error_body("Slow down.", "requests", code="rate_limit_exceeded"), errors.RateLimitedError, None),
        (
            error_body("maximum context length is 8192 tokens", code="context_length_exceeded"),
            errors.ContextLengthExceededError,
            None,
        ),
        (
            {"object": "error", "message": "bad sampling", "type": "BadRequestError", "param": None, "code": 400},
            errors.BadRequestError,
            400,
        ),
        (
            {
                "id": "gen-1",
                "object": "chat.completion.chunk",
                "error": {"code": 502, "message": "Upstream died"},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            },
            errors.ProviderUnavailableError,
            502,
        ),
        (error_body("something odd", "weird_error"), errors.StreamInterruptedError, None),
    ],
)
async def test_in_stream_error_events_are_typed(
    upstream: FakeUpstream, openai: OpenAIProvider, payload: dict[str, Any], expected: type, status: int | None
) -> None:
    upstream.handler = lambda r: stream_reply([sse(chunk({"content": "Par"})), sse(payload), DONE])
    seen, exc = await collect_until_error(openai)
    assert tokens_of(seen) == ["Par"]
    assert type(exc) is expected
    assert exc.status == status
    assert exc.provider_message
    assert exc.provider_message in orjson.dumps(payload).decode()
    if isinstance(exc, errors.StreamInterruptedError):
        assert exc.kind == "provider_error"


async def test_closing_a_stream_early_releases_the_connection(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    upstream.handler = lambda r: stream_reply([*stream_events(["a"], done=False), Pause(0.05), DONE])
    events = openai.stream(MODEL, req(), LIMITS)
    first = await anext(events)
    await events.aclose()  # type: ignore[attr-defined]
    assert first.delta == "a"
    upstream.handler = OpenAIFake(api_key=KEY)
    assert (await openai.chat(MODEL, req(), LIMITS)).text == "Hello from the fake."


# --------------------------------------------------------------------------- embeddings


async def test_embeddings_request_and_order_by_index(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    vectors = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]
    upstream.handler = lambda r: Reply.json(embeddings(vectors, order=[2, 0, 1]))
    response = await openai.embed("text-embedding-3-small", ["a", "b", "c"], LIMITS, dimensions=2)
    sent = upstream.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.json() == {
        "model": "text-embedding-3-small",
        "input": ["a", "b", "c"],
        "encoding_format": "float",
        "dimensions": 2,
    }
    assert response.vectors == vectors
    assert (response.provider, response.model, response.usage.prompt_tokens) == ("openai", "text-embedding-3-small", 12)
    upstream.handler = OpenAIFake(api_key=KEY)
    assert len((await openai.embed("text-embedding-3-small", ["a"], LIMITS)).vectors[0]) == 8
    assert "dimensions" not in upstream.requests[-1].json()


async def test_base64_embeddings_are_decoded(upstream: FakeUpstream, openai: OpenAIProvider) -> None:
    import array
    import base64

    packed = base64.b64encode(array.array("f", [0.5, -1.0]).tobytes()).decode()
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": packed}],
        "usage": {"prompt_tokens": 1},
    }
    upstream.handler = lambda r: Reply.json(body)
    assert (await openai.embed("e", ["a"], LIMITS)).vectors == [[0.5, -1.0]]


@pytest.mark.parametrize(
    "body",
    [
        embeddings([[0.1], [0.2]]),  # two vectors for three inputs
        embeddings([[0.1], [0.2], [0.3]], order=[0, 0, 1]),
        {"object": "list", "data": [{"index": 0}]},
        {"object": "list"},
        {"object": "list", "data": [{"index": 0, "embedding": 7}]},
    ],
)
async def test_unreadable_embeddings_are_unavailable(upstream: FakeUpstream, openai: OpenAIProvider, body: Any) -> None:
    upstream.handler = lambda r: Reply.json(body)
    with pytest.raises(errors.ProviderUnavailableError):
        await openai.embed("e", ["a", "b", "c"], LIMITS)


# --------------------------------------------------------------------------- through the router


async def test_router_chat_and_stream(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake(api_key=KEY)
    async with Router(timeout=10.0) as router:
        router.register(OpenAIProvider(api_key=KEY, base_url=f"{upstream.url}/v1"))
        request = ChatRequest(model=f"openai:{MODEL}", messages=[Message.user("Stream a short greeting.")])
        response = await router.chat(request)
        assert (response.provider, response.model, response.text) == ("openai", MODEL, "Hello from the fake.")
        assert [a.outcome for a in response.attempts] == ["ok"]
        events = [e async for e in router.stream(request)]
        assert "".join(tokens_of(events)) == "Hello from the fake."
        end = events[-1]
        assert (end.type, end.finish_reason) == ("end", "stop")
        assert end.response is not None
        assert end.response.usage.completion_tokens == 4
    assert [r.json().get("stream", False) for r in upstream.requests] == [False, True]


async def test_router_falls_back_past_an_unconfigured_openai(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake(api_key=None)
    async with Router(timeout=10.0) as router:
        router.register(OpenAIProvider(base_url=f"{upstream.url}/v1"))
        router.register(OpenAIProvider(name="local", base_url=f"{upstream.url}/v1", require_key=False))
        response = await router.chat(
            ChatRequest(model=f"openai:{MODEL}", fallbacks=["local:llama3"], messages=[Message.user("hi")])
        )
    assert (response.provider, response.model) == ("local", "llama3")
    assert [(a.provider, a.outcome, a.error) for a in response.attempts] == [
        ("openai", "skipped", "NotConfiguredError"),
        ("local", "ok", None),
    ]
    assert len(upstream.requests) == 1


async def test_router_stream_interruption_after_tokens_is_reported(upstream: FakeUpstream) -> None:
    upstream.handler = lambda r: stream_reply(stream_events(["Hi"], done=False))
    async with Router(timeout=10.0) as router:
        router.register(OpenAIProvider(api_key=KEY, base_url=f"{upstream.url}/v1"))
        seen: list[ChatStreamEvent] = []
        with pytest.raises(errors.StreamInterruptedError):
            async for event in router.stream(req()):
                seen.append(event)
    assert [e.type for e in seen] == ["token", "error"]


def test_completion_builder_matches_documented_shape() -> None:
    body = completion("hi")
    assert body["object"] == "chat.completion"
    assert set(body["choices"][0]) == {"index", "message", "logprobs", "finish_reason"}
    assert usage_chunk()["choices"] == []
