"""AnthropicProvider against a local server speaking the Messages API wire format."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from fakes import anthropic_server as wire
from fakes.upstream import FakeUpstream, Recorded, Reply
from polyroute import errors
from polyroute.providers._sse import SSEDecoder
from polyroute.providers.anthropic import AnthropicProvider, _Stream, map_messages
from polyroute.providers.base import CallLimits
from polyroute.router import Router
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

KEY = "sk-ant-api03-TESTKEY-never-shown"
LIMITS = CallLimits(connect=5.0, read=10.0)
WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[AnthropicProvider]:
    client = AnthropicProvider(api_key=KEY, base_url=upstream.url)
    yield client
    await client.aclose()


def ask(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model="anthropic:claude-sonnet-4-5", messages=list(messages), **kw)


def hello() -> ChatRequest:
    return ask(Message.user("Hello"))


async def collect(provider: AnthropicProvider, request: ChatRequest) -> list[ChatStreamEvent]:
    return [event async for event in provider.stream(wire.MODEL, request, LIMITS)]


def reply_with(upstream: FakeUpstream, reply: Reply) -> None:
    upstream.handler = lambda req: reply


def body_of(provider: AnthropicProvider, request: ChatRequest) -> dict[str, Any]:
    return provider.messages_body(wire.MODEL, request)[0]


# --------------------------------------------------------------------------- configuration & headers


async def test_sends_key_in_x_api_key_with_version_header(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, wire.message_reply([wire.text_block("Hi!")]))
    response = await provider.chat(wire.MODEL, hello(), LIMITS)
    assert response.text == "Hi!"
    (request,) = upstream.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.json()["model"] == wire.MODEL


async def test_base_url_may_already_end_in_v1(upstream: FakeUpstream) -> None:
    reply_with(upstream, wire.message_reply([wire.text_block("ok")]))
    client = AnthropicProvider(api_key=KEY, base_url=upstream.url + "/v1/", anthropic_version="2024-01-01")
    try:
        await client.chat(wire.MODEL, hello(), LIMITS)
    finally:
        await client.aclose()
    assert upstream.requests[0].path == "/v1/messages"
    assert upstream.requests[0].headers["anthropic-version"] == "2024-01-01"


async def test_from_env_and_missing_key(upstream: FakeUpstream) -> None:
    configured = AnthropicProvider.from_env(environ={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": upstream.url})
    assert configured.api_key == KEY
    assert configured.base_url == upstream.url
    assert configured.missing_config() is None
    assert configured.name == "anthropic"

    tuned = AnthropicProvider.from_env(environ={"ANTHROPIC_API_KEY": KEY}, anthropic_version="2024-10-22", api_key="k2")
    assert (tuned.anthropic_version, tuned.api_key) == ("2024-10-22", "k2")

    bare = AnthropicProvider.from_env("claude", environ={"ANTHROPIC_BASE_URL": upstream.url})
    assert bare.name == "claude"
    assert bare.missing_config() == "ANTHROPIC_API_KEY"
    with pytest.raises(errors.NotConfiguredError) as caught:
        await bare.chat(wire.MODEL, hello(), LIMITS)
    assert caught.value.env_var == "ANTHROPIC_API_KEY"
    assert upstream.requests == []
    assert AnthropicProvider.from_env(environ={}).base_url == "https://api.anthropic.com"


async def test_built_from_configuration(upstream: FakeUpstream) -> None:
    from polyroute.config.build import build_provider
    from polyroute.config.schema import ProviderSettings

    settings = ProviderSettings(
        endpoint=upstream.url + "/v1",
        headers={"anthropic-beta": "prompt-caching-2024-07-31"},
        options={"default_max_tokens": 99},
    )
    client = build_provider("anthropic", settings, {"ANTHROPIC_API_KEY": KEY})
    assert isinstance(client, AnthropicProvider)
    reply_with(upstream, wire.message_reply([wire.text_block("ok")]))
    try:
        await client.chat(wire.MODEL, hello(), LIMITS)
    finally:
        await client.aclose()
    (request,) = upstream.requests
    assert (request.path, request.json()["max_tokens"]) == ("/v1/messages", 99)
    assert (request.headers["x-api-key"], request.headers["anthropic-beta"]) == (KEY, "prompt-caching-2024-07-31")


def test_capabilities() -> None:
    caps = AnthropicProvider().capabilities.as_dict()
    assert caps == {
        "chat": True,
        "stream": True,
        "embeddings": False,
        "tools": True,
        "vision": True,
        "json_output": True,
    }


async def test_embed_is_unsupported(provider: AnthropicProvider) -> None:
    with pytest.raises(errors.UnsupportedFeatureError):
        await provider.embed(wire.MODEL, ["x"], LIMITS)


# --------------------------------------------------------------------------- request mapping


def test_system_messages_become_top_level_system_and_turns_alternate() -> None:
    system, turns = map_messages(
        [
            Message.system("You are terse."),
            Message.user("First"),
            Message.system("Answer in French."),
            Message.user([TextPart(text="Second"), TextPart(text="")]),
            Message.assistant("Un"),
            Message.assistant("Deux"),
        ]
    )
    assert system == "You are terse.\n\nAnswer in French."
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "First"}, {"type": "text", "text": "Second"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Un"}, {"type": "text", "text": "Deux"}]},
    ]


def test_images_as_base64_url_and_data_url() -> None:
    _, turns = map_messages(
        [
            Message.user(
                [
                    TextPart(text="Compare these"),
                    ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
                    ImagePart(url="https://example.com/cat.jpg"),
                    ImagePart(url="data:image/webp;base64,UklGRg=="),
                ]
            )
        ]
    )
    assert turns[0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}},
    ]


def test_a_data_url_that_is_not_base64_is_a_bad_request() -> None:
    with pytest.raises(errors.BadRequestError):
        map_messages([Message.user([ImagePart(url="data:image/png,rawbytes")])])


def test_tool_calls_and_parallel_results_share_one_user_turn_before_text() -> None:
    calls = [
        ToolCall(id="toolu_01", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="toolu_02", name="get_weather", raw_arguments='{"city": "Oslo"}'),
    ]
    _, turns = map_messages(
        [
            Message.user("Weather in Paris and Oslo?"),
            Message.assistant("Checking both.", tool_calls=calls),
            Message.tool("toolu_01", "18C sunny"),
            Message.tool("toolu_02", "-2C snow"),
            Message.user("Thanks, and compare them."),
        ]
    )
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "-2C snow"},
                {"type": "text", "text": "Thanks, and compare them."},
            ],
        },
    ]


def test_tool_results_go_first_even_when_text_came_before_them() -> None:
    _, turns = map_messages(
        [
            Message.assistant(tool_calls=[ToolCall(id="toolu_9", name="lookup", arguments={})]),
            Message.user("(result follows)"),
            Message.tool("toolu_9", "found it"),
        ]
    )
    assert [b["type"] for b in turns[1]["content"]] == ["tool_result", "text"]


def test_defaults_max_tokens_and_maps_sampling(provider: AnthropicProvider) -> None:
    body = body_of(provider, hello())
    assert body == {
        "model": wire.MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }
    body = body_of(provider, ask(Message.user("Hi"), max_tokens=50, temperature=1.7, top_p=0.9, stop=["END"]))
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop_sequences"]) == (50, 1.0, 0.9, ["END"])
    assert "stream" not in body
    assert provider.messages_body(wire.MODEL, hello(), stream=True)[0]["stream"] is True
    assert AnthropicProvider(default_max_tokens=256).messages_body("m", hello())[0]["max_tokens"] == 256


@pytest.mark.parametrize(
    ("choice", "wire_choice"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (NamedToolChoice(name="get_weather"), {"type": "tool", "name": "get_weather"}),
        (None, None),
    ],
)
def test_tools_and_tool_choice(provider: AnthropicProvider, choice: Any, wire_choice: Any) -> None:
    body = body_of(provider, ask(Message.user("Weather?"), tools=[WEATHER], tool_choice=choice))
    assert body["tools"] == [
        {"name": "get_weather", "input_schema": WEATHER.parameters, "description": "Current weather for a city"}
    ]
    assert body.get("tool_choice") == wire_choice


def test_json_schema_is_a_forced_tool(provider: AnthropicProvider) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = ResponseFormat(type="json_schema", json_schema=schema, name="city answer")
    body, format_tool = provider.messages_body(wire.MODEL, ask(Message.user("A city?"), response_format=fmt))
    assert format_tool == "city_answer"
    assert body["tools"] == [
        {"name": "city_answer", "description": body["tools"][0]["description"], "input_schema": schema}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "city_answer"}


def test_json_object_uses_a_permissive_schema_and_keeps_user_tools_callable(provider: AnthropicProvider) -> None:
    fmt = ResponseFormat(type="json_object", name="get_weather")  # clashes with the user's tool name
    body, format_tool = provider.messages_body(wire.MODEL, ask(Message.user("?"), tools=[WEATHER], response_format=fmt))
    assert format_tool == "get_weather_"
    assert [t["name"] for t in body["tools"]] == ["get_weather", "get_weather_"]
    assert body["tools"][1]["input_schema"] == {"type": "object", "additionalProperties": True}
    assert body["tool_choice"] == {"type": "any"}
    forced, _ = provider.messages_body(
        wire.MODEL, ask(Message.user("?"), tools=[WEATHER], tool_choice="none", response_format=fmt)
    )
    assert forced["tool_choice"] == {"type": "tool", "name": "get_weather_"}


# --------------------------------------------------------------------------- replies


async def test_parses_text_tool_calls_and_usage(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    content = [
        {"type": "thinking", "thinking": "Let me see.", "signature": "EqQB"},
        wire.text_block("Let me check "),
        wire.text_block("the weather."),
        wire.tool_use_block("toolu_01A09q90qw90lq917835lq9", "get_weather", {"city": "San Francisco"}),
    ]
    reply_with(
        upstream,
        wire.message_reply(
            content, stop_reason="tool_use", usage_=wire.usage(10, 20, cache_creation=5, cache_read=100)
        ),
    )
    response = await provider.chat(wire.MODEL, ask(Message.user("Weather?"), tools=[WEATHER]), LIMITS)
    assert response.text == "Let me check the weather."
    assert response.finish_reason == "tool_calls"
    (call,) = response.message.tool_calls or []
    assert (call.id, call.name, call.arguments) == (
        "toolu_01A09q90qw90lq917835lq9",
        "get_weather",
        {"city": "San Francisco"},
    )
    assert orjson.loads(call.raw_arguments) == {"city": "San Francisco"}
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens) == (
        115,
        20,
        135,
        100,
    )
    assert (response.id, response.provider, response.model) == ("msg_01XFDUDYJgAACzvnptvVoYEL", "anthropic", wire.MODEL)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")],
)
async def test_stop_reasons(provider: AnthropicProvider, upstream: FakeUpstream, stop_reason: str, finish: str) -> None:
    reply_with(upstream, wire.message_reply([wire.text_block("Some text")], stop_reason=stop_reason))
    assert (await provider.chat(wire.MODEL, hello(), LIMITS)).finish_reason == finish


async def test_refusal_without_content_is_content_filtered(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, wire.message_reply([], stop_reason="refusal"))
    with pytest.raises(errors.ContentFilteredError):
        await provider.chat(wire.MODEL, hello(), LIMITS)


async def test_json_schema_answer_comes_back_as_text(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = ask(Message.user("A city?"), response_format=ResponseFormat(type="json_schema", json_schema=schema))
    reply_with(
        upstream,
        wire.message_reply([wire.tool_use_block("toolu_x", "response", {"city": "Lyon"})], stop_reason="tool_use"),
    )
    response = await provider.chat(wire.MODEL, request, LIMITS)
    assert orjson.loads(response.text) == {"city": "Lyon"}
    assert response.finish_reason == "stop"
    assert response.message.tool_calls is None
    assert upstream.requests[0].json()["tool_choice"] == {"type": "tool", "name": "response"}


# --------------------------------------------------------------------------- streaming


def tool_and_text_stream() -> list[str]:
    return [
        wire.message_start(input_tokens=30, cache_read=4),
        *wire.thinking_block_events(0, "Hmm."),
        *wire.text_block_events(1, ["  Voilà ", "le météo 🌤", "\n\n", "trailing  "]),
        wire.ping(),
        *wire.tool_use_events(2, "toolu_01", "get_weather", ["", '{"ci', 'ty": "Sã', 'o Paulo"', "}"]),
        wire.message_delta("tool_use", 41),
        wire.message_stop(),
    ]


def check_tool_and_text_events(events: list[ChatStreamEvent]) -> None:
    kinds = [e.type for e in events]
    assert kinds == ["token"] * 4 + ["tool_call", "usage", "end"]
    assert [e.delta for e in events[:4]] == ["  Voilà ", "le météo 🌤", "\n\n", "trailing  "]
    call = events[4].tool_call
    assert call is not None
    assert (call.id, call.name, call.arguments, call.raw_arguments) == (
        "toolu_01",
        "get_weather",
        {"city": "São Paulo"},
        '{"city": "São Paulo"}',
    )
    usage = events[5].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (34, 41, 4)
    end = events[6]
    assert end.finish_reason == "tool_calls"
    assert end.response is not None
    assert end.response.text == "  Voilà le météo 🌤\n\ntrailing  "
    assert end.response.id == "msg_stream_01"


async def test_stream_split_at_awkward_tcp_boundaries(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    # 7-byte pieces cut inside "event:" lines, JSON strings, multi-byte UTF-8 and input_json_delta.
    reply_with(upstream, Reply.sse(wire.paced(wire.split_every(tool_and_text_stream(), 7))))
    check_tool_and_text_events(await collect(provider, ask(Message.user("Weather?"), tools=[WEATHER])))
    assert upstream.requests[0].json()["stream"] is True
    assert upstream.requests[0].headers["accept"] == "text/event-stream"


def test_stream_parser_is_indifferent_to_every_possible_split() -> None:
    raw = "".join(tool_and_text_stream()).encode()
    for cut in range(1, len(raw)):
        decoder, parser = SSEDecoder(), _Stream("anthropic", wire.MODEL, None)
        events = [e for chunk in (raw[:cut], raw[cut:]) for sse in decoder.feed(chunk) for e in parser.feed(sse)]
        check_tool_and_text_events(events)
        assert parser.done


async def test_stream_json_schema_relays_tool_input_as_tokens(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    pieces = ['{"ci', 'ty": ', '"Lyon"}']
    stream = [
        wire.message_start(),
        *wire.tool_use_events(0, "toolu_f", "response", pieces),
        wire.message_delta("tool_use"),
        wire.message_stop(),
    ]
    reply_with(upstream, Reply.sse(stream))
    request = ask(Message.user("?"), response_format=ResponseFormat(type="json_object"))
    events = await collect(provider, request)
    assert [e.delta for e in events if e.type == "token"] == pieces
    assert events[-1].finish_reason == "stop"
    assert events[-1].response is not None and events[-1].response.message.tool_calls is None


async def test_stream_usage_keeps_counts_a_later_event_leaves_out(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    usage = {"input_tokens": None, "output_tokens": 9}
    delta = wire.event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage})
    reply_with(
        upstream,
        Reply.sse([wire.message_start(input_tokens=25), *wire.text_block_events(0, ["x"]), delta, wire.message_stop()]),
    )
    end = (await collect(provider, hello()))[-1]
    assert end.usage is not None
    assert (end.usage.prompt_tokens, end.usage.completion_tokens, end.usage.total_tokens) == (25, 9, 34)


async def test_stream_error_event_is_typed(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    stream = [
        wire.message_start(),
        *wire.text_block_events(0, ["Partial"])[:2],
        wire.error_event("overloaded_error", "Overloaded"),
    ]
    reply_with(upstream, Reply.sse(stream))
    seen: list[ChatStreamEvent] = []
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        async for event in provider.stream(wire.MODEL, hello(), LIMITS):
            seen.append(event)
    assert [e.delta for e in seen] == ["Partial"]
    assert caught.value.provider_message == "Overloaded"
    assert caught.value.retryable


async def test_stream_rate_limit_error_event(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, Reply.sse([wire.message_start(), wire.error_event("rate_limit_error", "slow down")]))
    with pytest.raises(errors.RateLimitedError):
        await collect(provider, hello())


async def test_stream_without_message_stop_is_truncated(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, Reply.sse(wire.text_stream(["Hello", " there"])[:-1]))
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await collect(provider, hello())
    assert caught.value.kind == "truncated"


async def test_stream_dropped_connection(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, Reply.sse(wire.text_stream(["Hello"])[:3], disconnect=True))
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await collect(provider, hello())
    assert caught.value.kind in ("disconnect", "truncated")


@pytest.mark.parametrize(
    "bad",
    [
        "event: content_block_delta\ndata: {not json\n\n",
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0}\n\n',
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":5,'
        '"delta":{"type":"input_json_delta","partial_json":"{"}}\n\n',
    ],
)
async def test_stream_malformed_event(provider: AnthropicProvider, upstream: FakeUpstream, bad: str) -> None:
    reply_with(upstream, Reply.sse([wire.message_start(), bad, wire.message_stop()]))
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await collect(provider, hello())
    assert caught.value.kind == "malformed"


async def test_stream_tool_input_that_is_not_json_is_malformed(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    stream = [
        wire.message_start(),
        *wire.tool_use_events(0, "toolu_1", "get_weather", ['{"city": ']),
        wire.message_stop(),
    ]
    reply_with(upstream, Reply.sse(stream))
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await collect(provider, ask(Message.user("?"), tools=[WEATHER]))
    assert caught.value.kind == "malformed"


async def test_stream_refusal_without_output(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, Reply.sse([wire.message_start(), wire.message_delta("refusal", 0), wire.message_stop()]))
    with pytest.raises(errors.ContentFilteredError):
        await collect(provider, hello())


# --------------------------------------------------------------------------- HTTP errors


def reset_in(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("status", "error_type", "text", "expected"),
    [
        (
            400,
            "invalid_request_error",
            "prompt is too long: 208310 tokens > 200000 maximum",
            errors.ContextLengthExceededError,
        ),
        (400, "invalid_request_error", "messages: roles must alternate", errors.BadRequestError),
        (401, "authentication_error", "invalid x-api-key", errors.AuthenticationError),
        (403, "permission_error", "Your API key does not have permission", errors.PermissionDeniedError),
        (404, "not_found_error", "model: claude-nope", errors.ModelNotFoundError),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", errors.BadRequestError),
        (500, "api_error", "Internal server error", errors.ProviderUnavailableError),
        (529, "overloaded_error", "Overloaded", errors.ProviderUnavailableError),
    ],
)
async def test_http_errors(
    provider: AnthropicProvider,
    upstream: FakeUpstream,
    status: int,
    error_type: str,
    text: str,
    expected: type[Exception],
) -> None:
    reply_with(upstream, wire.error_reply(status, error_type, text))
    with pytest.raises(expected) as caught:
        await provider.chat(wire.MODEL, hello(), LIMITS)
    exc = caught.value
    assert isinstance(exc, errors.ProviderError)
    assert type(exc) is expected
    assert (exc.status, exc.provider_message, exc.provider) == (status, text, "anthropic")
    assert KEY not in f"{exc} {exc.details()} {exc!r}"


async def test_429_retry_after_header(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    reply_with(
        upstream,
        wire.error_reply(
            429, "rate_limit_error", "Number of requests has exceeded your rate limit", {"retry-after": "7"}
        ),
    )
    with pytest.raises(errors.RateLimitedError) as caught:
        await provider.chat(wire.MODEL, hello(), LIMITS)
    assert caught.value.retry_after == 7.0


async def test_429_reset_headers_when_no_retry_after(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset_in(20),
        "anthropic-ratelimit-tokens-remaining": "90000",
        "anthropic-ratelimit-tokens-reset": reset_in(55),
    }
    reply_with(upstream, wire.error_reply(429, "rate_limit_error", "Rate limited", headers))
    with pytest.raises(errors.RateLimitedError) as caught:
        await provider.chat(wire.MODEL, hello(), LIMITS)
    assert caught.value.retry_after is not None
    assert 15 < caught.value.retry_after <= 20


async def test_stream_open_http_error(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, wire.error_reply(529, "overloaded_error", "Overloaded", {"retry-after": "2"}))
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        await collect(provider, hello())
    assert (caught.value.status, caught.value.retry_after) == (529, 2.0)


# --------------------------------------------------------------------------- through the router


async def test_chat_and_stream_through_the_router(upstream: FakeUpstream) -> None:
    def handler(request: Recorded) -> Reply:
        if request.json().get("stream"):
            return Reply.sse(wire.text_stream(["Bon", "jour"]))
        return wire.message_reply([wire.text_block("Bonjour")])

    upstream.handler = handler
    async with Router(timeout=10.0) as router:
        router.register(AnthropicProvider(api_key=KEY, base_url=upstream.url))
        request = ChatRequest(model=f"anthropic:{wire.MODEL}", messages=[Message.user("Say hello in French")])
        response = await router.chat(request)
        assert (response.text, response.provider, response.model) == ("Bonjour", "anthropic", wire.MODEL)
        assert [a.outcome for a in response.attempts] == ["ok"]
        events = [event async for event in router.stream(request)]
    assert "".join(e.delta for e in events if e.type == "token") == "Bonjour"
    assert events[-1].type == "end"
    assert events[-1].response is not None and events[-1].response.text == "Bonjour"
    assert events[-1].response.usage.completion_tokens == 15
