"""CohereProvider against a local server speaking the Cohere v2 Chat and Embed wire format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fakes import cohere_server as wire
from fakes.anthropic_server import paced, split_every
from fakes.upstream import FakeUpstream, Recorded, Reply
from polyroute import errors
from polyroute.providers._sse import SSEDecoder
from polyroute.providers.base import CallLimits
from polyroute.providers.cohere import CohereProvider, _Stream
from polyroute.router import Router
from polyroute.types import (
    ChatRequest,
    ChatStreamEvent,
    EmbeddingRequest,
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)

KEY = "co-TESTKEY-0123456789-never-shown"
LIMITS = CallLimits(connect=5.0, read=10.0)
WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[CohereProvider]:
    client = CohereProvider(api_key=KEY, base_url=upstream.url)
    yield client
    await client.aclose()


def ask(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model=f"cohere:{wire.MODEL}", messages=list(messages), **kw)


def hello() -> ChatRequest:
    return ask(Message.user("Hello"))


def reply_with(upstream: FakeUpstream, reply: Reply) -> None:
    upstream.handler = lambda req: reply


async def collect(provider: CohereProvider, request: ChatRequest) -> list[ChatStreamEvent]:
    return [event async for event in provider.stream(wire.MODEL, request, LIMITS)]


# --------------------------------------------------------------------------- configuration & headers


async def test_bearer_auth_and_paths(provider: CohereProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, wire.chat_reply("Hi!"))
    response = await provider.chat(wire.MODEL, hello(), LIMITS)
    assert response.text == "Hi!"
    (request,) = upstream.requests
    assert (request.method, request.path) == ("POST", "/v2/chat")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json() == {"model": wire.MODEL, "messages": [{"role": "user", "content": "Hello"}]}


async def test_from_env_reads_both_key_names_and_the_base_url(upstream: FakeUpstream) -> None:
    a = CohereProvider.from_env(environ={"COHERE_API_KEY": KEY, "COHERE_BASE_URL": upstream.url + "/v2/"})
    b = CohereProvider.from_env(
        "co", environ={"CO_API_KEY": "other", "CO_API_URL": upstream.url}, input_type="search_query"
    )
    assert (a.api_key, a.base_url, a.name) == (KEY, upstream.url + "/v2", "cohere")
    assert (b.api_key, b.base_url, b.name, b.input_type) == ("other", upstream.url, "co", "search_query")
    reply_with(upstream, wire.chat_reply("ok"))
    for client in (a, b):
        await client.chat(wire.MODEL, hello(), LIMITS)
        await client.aclose()
    assert [r.path for r in upstream.requests] == ["/v2/chat", "/v2/chat"]
    upstream.requests.clear()
    assert CohereProvider.from_env(environ={}).base_url == "https://api.cohere.com"

    bare = CohereProvider.from_env(environ={"COHERE_BASE_URL": upstream.url})
    assert bare.missing_config() == "COHERE_API_KEY"
    with pytest.raises(errors.NotConfiguredError):
        await bare.chat(wire.MODEL, hello(), LIMITS)
    assert upstream.requests == []


async def test_built_from_configuration(upstream: FakeUpstream) -> None:
    from polyroute.config.build import build_provider
    from polyroute.config.schema import ProviderSettings

    settings = ProviderSettings(endpoint=upstream.url, options={"input_type": "clustering"})
    client = build_provider("cohere", settings, {"CO_API_KEY": KEY})
    assert isinstance(client, CohereProvider)
    upstream.handler = wire.embed_handler()
    try:
        await client.embed(wire.EMBED_MODEL, ["a"], LIMITS)
    finally:
        await client.aclose()
    (request,) = upstream.requests
    assert (request.path, request.json()["input_type"]) == ("/v2/embed", "clustering")
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_capabilities() -> None:
    caps = CohereProvider().capabilities.as_dict()
    assert caps == {
        "chat": True,
        "stream": True,
        "embeddings": True,
        "tools": True,
        "vision": True,
        "json_output": True,
    }


# --------------------------------------------------------------------------- request mapping


def test_messages_tools_and_tool_results(provider: CohereProvider) -> None:
    calls = [
        ToolCall(id="get_weather_1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="get_weather_2", name="get_weather", raw_arguments='{"city": "Oslo"}'),
    ]
    request = ask(
        Message.system("Be brief."),
        Message.user([TextPart(text="What is this?"), ImagePart(url="https://example.com/a.png", detail="low")]),
        Message.user([ImagePart(data="iVBORw0KGgo=", media_type="image/png")]),
        Message.assistant("I will check the weather.", tool_calls=calls),
        Message.tool("get_weather_1", '{"temp": 18}'),
        Message.tool("get_weather_2", '{"temp": -2}'),
        Message.assistant(""),
        Message.assistant("It is warmer in Paris."),
        tools=[WEATHER],
        tool_choice="required",
        temperature=0.2,
        top_p=1.0,
        max_tokens=300,
        stop=["END"],
    )
    body = provider.chat_body(wire.MODEL, request)
    assert body == {
        "model": wire.MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}],
            },
            {
                "role": "assistant",
                "tool_plan": "I will check the weather.",
                "tool_calls": [
                    {
                        "id": "get_weather_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "get_weather_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "get_weather_1", "content": '{"temp": 18}'},
            {"role": "tool", "tool_call_id": "get_weather_2", "content": '{"temp": -2}'},
            {"role": "assistant", "content": "It is warmer in Paris."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER.parameters,
                    "description": "Current weather for a city",
                },
            }
        ],
        "tool_choice": "REQUIRED",
        "temperature": 0.2,
        "p": 0.99,
        "max_tokens": 300,
        "stop_sequences": ["END"],
    }
    assert provider.chat_body(wire.MODEL, hello(), stream=True)["stream"] is True


@pytest.mark.parametrize(("choice", "sent"), [("auto", None), (None, None), ("required", "REQUIRED"), ("none", "NONE")])
def test_tool_choice(provider: CohereProvider, choice: Any, sent: str | None) -> None:
    body = provider.chat_body(wire.MODEL, ask(Message.user("?"), tools=[WEATHER], tool_choice=choice))
    assert body.get("tool_choice") == sent


async def test_a_named_tool_choice_is_unsupported(provider: CohereProvider, upstream: FakeUpstream) -> None:
    request = ask(Message.user("?"), tools=[WEATHER], tool_choice=NamedToolChoice(name="get_weather"))
    with pytest.raises(errors.UnsupportedFeatureError):
        await provider.chat(wire.MODEL, request, LIMITS)
    assert upstream.requests == []


def test_response_formats(provider: CohereProvider) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    as_schema = ask(Message.user("?"), response_format=ResponseFormat(type="json_schema", json_schema=schema))
    as_object = ask(Message.user("?"), response_format=ResponseFormat(type="json_object"))
    as_text = ask(Message.user("?"), response_format=ResponseFormat(type="text"))
    assert provider.chat_body(wire.MODEL, as_schema)["response_format"] == {
        "type": "json_object",
        "json_schema": schema,
    }
    assert provider.chat_body(wire.MODEL, as_object)["response_format"] == {"type": "json_object"}
    assert "response_format" not in provider.chat_body(wire.MODEL, as_text)


# --------------------------------------------------------------------------- replies


async def test_parses_tool_calls_and_usage(provider: CohereProvider, upstream: FakeUpstream) -> None:
    calls = [wire.tool_call("get_weather_1byjy32y4hvq", "get_weather", '{"city":"Toronto"}')]
    reply_with(upstream, wire.chat_reply(tool_calls=calls, tool_plan="I will look it up.", finish_reason="TOOL_CALL"))
    response = await provider.chat(wire.MODEL, ask(Message.user("Weather?"), tools=[WEATHER]), LIMITS)
    assert response.message.content is None
    assert response.finish_reason == "tool_calls"
    (call,) = response.message.tool_calls or []
    assert (call.id, call.name, call.arguments, call.raw_arguments) == (
        "get_weather_1byjy32y4hvq",
        "get_weather",
        {"city": "Toronto"},
        '{"city":"Toronto"}',
    )
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (9, 5, 14)
    assert (response.id, response.provider, response.model) == (
        "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        "cohere",
        wire.MODEL,
    )


async def test_usage_falls_back_to_billed_units(provider: CohereProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, wire.chat_reply("ok", usage_={"billed_units": {"input_tokens": 4.0, "output_tokens": 2.0}}))
    usage = (await provider.chat(wire.MODEL, hello(), LIMITS)).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4, 2, 6)


@pytest.mark.parametrize(
    ("reason", "finish"), [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length")]
)
async def test_finish_reasons(provider: CohereProvider, upstream: FakeUpstream, reason: str, finish: str) -> None:
    reply_with(upstream, wire.chat_reply("text", finish_reason=reason))
    assert (await provider.chat(wire.MODEL, hello(), LIMITS)).finish_reason == finish


async def test_error_finish_reason_is_unavailable(provider: CohereProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, wire.chat_reply("", finish_reason="ERROR"))
    with pytest.raises(errors.ProviderUnavailableError):
        await provider.chat(wire.MODEL, hello(), LIMITS)


async def test_tool_arguments_that_are_not_json(provider: CohereProvider, upstream: FakeUpstream) -> None:
    reply_with(
        upstream, wire.chat_reply(tool_calls=[wire.tool_call("c1", "get_weather", "{city:")], finish_reason="TOOL_CALL")
    )
    with pytest.raises(errors.ProviderUnavailableError):
        await provider.chat(wire.MODEL, hello(), LIMITS)


# --------------------------------------------------------------------------- streaming


def tool_and_text_stream() -> list[str]:
    return [
        wire.message_start(),
        *wire.tool_plan_events(["I will ", "check."]),
        *wire.tool_call_events(0, "get_weather_a", "get_weather", ['{\n    "', 'city": "Zü', 'rich"\n}']),
        *wire.tool_call_events(1, "get_weather_b", "get_weather", ['{"city": "Kyiv"}']),
        *wire.content_events(["  Ça ", "va 🌧", "\n\n", "end  "]),
        wire.message_end("TOOL_CALL", wire.usage(20, 30)),
    ]


def check_tool_and_text_events(events: list[ChatStreamEvent]) -> None:
    assert [e.type for e in events] == ["tool_call", "tool_call"] + ["token"] * 4 + ["usage", "end"]
    first, second = events[0].tool_call, events[1].tool_call
    assert first is not None and second is not None
    assert (first.id, first.arguments, first.raw_arguments) == (
        "get_weather_a",
        {"city": "Zürich"},
        '{\n    "city": "Zürich"\n}',
    )
    assert (second.id, second.arguments) == ("get_weather_b", {"city": "Kyiv"})
    assert [e.delta for e in events[2:6]] == ["  Ça ", "va 🌧", "\n\n", "end  "]
    assert events[6].usage is not None and events[6].usage.total_tokens == 50
    end = events[7]
    assert end.finish_reason == "tool_calls"
    assert end.response is not None and end.response.text == "  Ça va 🌧\n\nend  "
    assert end.response.id == "29f14a5a-11de-4cae-9800-25e4747408ea"


async def test_stream_split_at_awkward_tcp_boundaries(provider: CohereProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, Reply.sse(paced(split_every(tool_and_text_stream(), 5))))
    check_tool_and_text_events(await collect(provider, ask(Message.user("?"), tools=[WEATHER])))
    assert upstream.requests[0].json()["stream"] is True


def test_stream_parser_is_indifferent_to_every_possible_split() -> None:
    raw = "".join(tool_and_text_stream()).encode()
    for cut in range(1, len(raw)):
        decoder, parser = SSEDecoder(), _Stream("cohere", wire.MODEL)
        events = [e for chunk in (raw[:cut], raw[cut:]) for sse in decoder.feed(chunk) for e in parser.feed(sse)]
        check_tool_and_text_events(events)
        assert parser.done


async def test_stream_without_event_lines_and_with_done_marker(
    provider: CohereProvider, upstream: FakeUpstream
) -> None:
    # Only the JSON ``type`` names each event here; a trailing [DONE] must not matter.
    data_only = [
        "".join(line + "\n" for line in e.splitlines() if line.startswith("data:")) + "\n"
        for e in wire.text_stream(["a", "b"])
    ]
    reply_with(upstream, Reply.sse([*data_only, "data: [DONE]\n\n"]))
    events = await collect(provider, hello())
    assert [e.type for e in events] == ["token", "token", "usage", "end"]


async def test_stream_without_message_end_is_truncated(provider: CohereProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, Reply.sse(wire.text_stream(["Hello"])[:-1]))
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await collect(provider, hello())
    assert caught.value.kind == "truncated"


async def test_stream_error_finish(provider: CohereProvider, upstream: FakeUpstream) -> None:
    stream = [wire.message_start(), *wire.content_events(["par"]), wire.message_end("ERROR", error="internal failure")]
    reply_with(upstream, Reply.sse(stream))
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        await collect(provider, hello())
    assert caught.value.provider_message == "internal failure"


@pytest.mark.parametrize(
    "bad",
    [
        "event: content-delta\ndata: {oops\n\n",
        'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{}}\n\n',
        'event: tool-call-delta\ndata: {"type":"tool-call-delta","index":3,'
        '"delta":{"message":{"tool_calls":{"function":{"arguments":"{}"}}}}}\n\n',
        "".join(wire.tool_call_events(0, "c1", "get_weather", ['{"city": '])),
        "".join(wire.tool_call_events(0, "c1", "", ["{}"])),
        'event: tool-call-end\ndata: {"type":"tool-call-end","index":0}\n\n',
    ],
)
async def test_stream_malformed_event(provider: CohereProvider, upstream: FakeUpstream, bad: str) -> None:
    well_formed = [
        *wire.content_events(["fine"]),
        *wire.tool_call_events(0, "c9", "get_weather", ["{}"]),
        wire.message_end(),
    ]
    reply_with(upstream, Reply.sse([wire.message_start(), *well_formed]))
    assert [e.type for e in await collect(provider, hello())] == ["token", "tool_call", "usage", "end"]
    reply_with(upstream, Reply.sse([wire.message_start(), bad, *well_formed]))
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await collect(provider, hello())
    assert caught.value.kind == "malformed"


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        (400, "invalid request: message must be at least 1 token long", errors.BadRequestError),
        (
            400,
            "too many tokens: total number of tokens in the prompt cannot exceed 4081",
            errors.ContextLengthExceededError,
        ),
        (401, "invalid api token", errors.AuthenticationError),
        (498, "invalid api token", errors.AuthenticationError),
        (402, "Please add a payment method", errors.PermissionDeniedError),
        (404, "model 'command-x' not found", errors.ModelNotFoundError),
        (499, "request cancelled", errors.ProviderUnavailableError),
        (500, "internal server error", errors.ProviderUnavailableError),
    ],
)
async def test_http_errors(
    provider: CohereProvider, upstream: FakeUpstream, status: int, text: str, expected: type[Exception]
) -> None:
    reply_with(upstream, wire.error_reply(status, text))
    with pytest.raises(expected) as caught:
        await provider.chat(wire.MODEL, hello(), LIMITS)
    exc = caught.value
    assert isinstance(exc, errors.ProviderError)
    assert type(exc) is expected
    assert (exc.status, exc.provider_message) == (status, text)
    assert KEY not in f"{exc} {exc.details()} {exc!r}"


async def test_429_is_rate_limited_with_retry_after(provider: CohereProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, wire.error_reply(429, "You are past the per minute request limit", {"retry-after": "3"}))
    with pytest.raises(errors.RateLimitedError) as caught:
        await collect(provider, hello())
    assert (caught.value.status, caught.value.retry_after) == (429, 3.0)


# --------------------------------------------------------------------------- embeddings


async def test_embeddings_request_and_order_across_batches(provider: CohereProvider, upstream: FakeUpstream) -> None:
    answer = wire.embed_handler(dimensions=4)

    async def handler(request: Recorded) -> Reply:
        if request.json()["texts"][0] == "t":
            await asyncio.sleep(0.05)  # the first batch answers last
        return answer(request)

    upstream.handler = handler
    texts = ["t" * (n + 1) for n in range(200)]
    response = await provider.embed(wire.EMBED_MODEL, texts, LIMITS, dimensions=4)
    assert [v[0] for v in response.vectors] == [float(len(t)) for t in texts]
    assert all(len(v) == 4 for v in response.vectors)
    assert (response.usage.prompt_tokens, response.provider, response.model) == (400, "cohere", wire.EMBED_MODEL)
    sent = sorted((r.json() for r in upstream.requests), key=lambda b: len(b["texts"][0]))
    assert [len(b["texts"]) for b in sent] == [96, 96, 8]
    assert all(r.path == "/v2/embed" for r in upstream.requests)
    assert sent[0] == {
        "model": wire.EMBED_MODEL,
        "texts": texts[:96],
        "input_type": "search_document",
        "embedding_types": ["float"],
        "output_dimension": 4,
    }


async def test_embeddings_with_a_missing_vector(provider: CohereProvider, upstream: FakeUpstream) -> None:
    reply_with(upstream, Reply.json({"id": "x", "embeddings": {"float": [[0.1]]}, "meta": {}}))
    with pytest.raises(errors.ProviderUnavailableError):
        await provider.embed(wire.EMBED_MODEL, ["a", "b"], LIMITS)


async def test_embeddings_error_from_one_batch(provider: CohereProvider, upstream: FakeUpstream) -> None:
    answer = wire.embed_handler()
    upstream.handler = lambda r: wire.error_reply(429, "slow down") if len(r.json()["texts"]) < 96 else answer(r)
    with pytest.raises(errors.RateLimitedError):
        await provider.embed(wire.EMBED_MODEL, ["x"] * 100, LIMITS)


# --------------------------------------------------------------------------- through the router


async def test_chat_stream_and_embed_through_the_router(upstream: FakeUpstream) -> None:
    embed = wire.embed_handler()

    def handler(request: Recorded) -> Reply:
        if request.path == "/v2/embed":
            return embed(request)
        if request.json().get("stream"):
            return Reply.sse(wire.text_stream(["Sa", "lut"]))
        return wire.chat_reply("Salut")

    upstream.handler = handler
    async with Router(timeout=10.0) as router:
        router.register(CohereProvider(api_key=KEY, base_url=upstream.url))
        request = ChatRequest(model=f"cohere:{wire.MODEL}", messages=[Message.user("Say hi in French")])
        response = await router.chat(request)
        assert (response.text, response.provider, response.model) == ("Salut", "cohere", wire.MODEL)
        events = [event async for event in router.stream(request)]
        vectors = await router.embed(EmbeddingRequest(model=f"cohere:{wire.EMBED_MODEL}", input=["a", "bcd"]))
    assert "".join(e.delta for e in events if e.type == "token") == "Salut"
    assert events[-1].type == "end" and events[-1].response is not None
    assert events[-1].response.usage.total_tokens == 14
    assert [v[:2] for v in vectors.vectors] == [[1.0, 0.0], [3.0, 1.0]]
    assert orjson.loads(upstream.requests[-1].body)["texts"] == ["a", "bcd"]
