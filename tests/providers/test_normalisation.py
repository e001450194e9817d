"""One conversation, every wire format, the same normalised result.

Each provider talks to a local fake speaking its own wire format (built from the
``fakes/*_server.py`` builders). The same scenario runs through all of them:

1. the user asks; the model calls ``get_weather`` (tool defined with a JSON Schema);
2. the tool result goes back; the model answers in text;
3. a JSON-schema request is answered by each provider's native structured-output feature
   and validated with :func:`polyroute.structured.parse_json_response`;

and the test asserts identical ToolCalls (name, parsed arguments, JSON-equivalent raw
arguments, a non-empty id that is the same in chat and stream), finish reasons, final text
and usage, with streams cut at awkward byte boundaries (1 and 7 bytes: inside JSON strings,
SSE lines, event-stream frames and the UTF-8 of "°"). ``tool_choice`` values a wire cannot
express must be refused with ``UnsupportedFeatureError`` before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from fakes import anthropic_server as anth
from fakes import bedrock_server as bed
from fakes import cohere_server as coh
from fakes import gemini_server as gem
from fakes import ollama_server as oll
from fakes import openai_server as oai
from fakes.azure_server import AzureFake, prompt_filter_chunk
from fakes.upstream import FakeUpstream, Recorded, Reply
from fakes.vertex_server import VertexFake
from polyroute import errors
from polyroute.providers._schema import gemini_schema
from polyroute.providers.anthropic import AnthropicProvider
from polyroute.providers.azure import AzureOpenAIProvider
from polyroute.providers.base import CallLimits, Provider
from polyroute.providers.bedrock import BedrockProvider
from polyroute.providers.cohere import CohereProvider
from polyroute.providers.gemini import GeminiProvider
from polyroute.providers.ollama import OllamaProvider
from polyroute.providers.openai import OpenAIProvider
from polyroute.providers.presets import preset
from polyroute.providers.vertex import VertexGeminiProvider
from polyroute.structured import parse_json_response
from polyroute.types import (
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)

LIMITS = CallLimits(connect=5.0, read=10.0)
WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
)
ARGS = {"city": "Paris", "unit": "celsius"}
ARG_PIECES = ['{"ci', 'ty": "Pa', 'ris", "unit"', ': "celsius"}']
RAW = "".join(ARG_PIECES)
CALL_ID = "call_w1"
FINAL = "It is 21 °C in Paris."
FINAL_PIECES = ["It is 21 ", "°C in Paris."]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
    "required": ["city", "temp"],
}
ANSWER = {"city": "Paris", "temp": 21}
ANSWER_TEXT = '{"city": "Paris", "temp": 21}'
ANSWER_PIECES = [ANSWER_TEXT[:9], ANSWER_TEXT[9:]]
TOOL_RESULT = '{"temp_c": 21}'
PROMPT, COMPLETION = 30, 8
SPLITS = (None, 1, 7)


def phase(raw: bytes) -> str:
    """Which turn a request is: the JSON-schema request, the one after the tool result, or the first."""
    if b'"temp"' in raw:
        return "json"
    return "final" if b"temp_c" in raw else "call"


def cut(pieces: Iterable[str | bytes], split: int | None) -> list[bytes]:
    data = b"".join(p.encode() if isinstance(p, str) else p for p in pieces)
    return [data[i : i + split] for i in range(0, len(data), split)] if split else [data]


@dataclass
class Wire:
    """One provider, its fake, and how its wire says each turn."""

    name: str
    model: str
    #: url -> provider
    make: Callable[[str], Provider]
    #: (reply builder, split holder) -> FakeUpstream handler
    handler: Callable[[Callable[[Recorded, bool], Reply]], Any]
    #: (phase, stream, split) -> the native reply
    reply: Callable[[str, bool, int | None], Reply]
    #: the request body's schema, in the wire's own place
    schema_sent: Callable[[dict[str, Any]], Any]
    expected_schema: Any = field(default_factory=lambda: SCHEMA)
    #: whether tool-call ids travel on this wire (else the provider derives stable ones)
    native_ids: bool = True
    #: tool_choice values the wire cannot express, and ``"image_url"`` when it cannot fetch images
    refuses: frozenset[str] = frozenset()


# --------------------------------------------------------------------------- OpenAI family


def openai_reply(p: str, stream: bool, split: int | None, *, lead: Iterable[str] = ()) -> Reply:
    counts = oai.usage(PROMPT, COMPLETION)
    if not stream:
        if p == "call":
            return oai.completion_reply(
                None, tool_calls=[oai.tool_call(CALL_ID, "get_weather", RAW)], usage_counts=counts
            )
        return oai.completion_reply(FINAL if p == "final" else ANSWER_TEXT, usage_counts=counts)
    if p == "call":
        events = oai.stream_events(
            (), tool_calls=oai.tool_call_chunks(0, CALL_ID, "get_weather", ARG_PIECES), usage_counts=counts
        )
    else:
        events = oai.stream_events(FINAL_PIECES if p == "final" else ANSWER_PIECES, usage_counts=counts)
    return Reply.sse(cut([*lead, *events], split))


def openai_handler(fake: oai.OpenAIFake) -> Callable[[Callable[[Recorded, bool], Reply]], Any]:
    def install(answer: Callable[[Recorded, bool], Reply]) -> Any:
        fake.chat = lambda body: answer(Recorded("POST", "", "", {}, orjson.dumps(body)), bool(body.get("stream")))  # type: ignore[method-assign]
        return fake

    return install


def openai_schema(body: dict[str, Any]) -> Any:
    return body["response_format"]["json_schema"]["schema"]


# --------------------------------------------------------------------------- Gemini family


def gemini_reply(p: str, stream: bool, split: int | None) -> Reply:
    meta = gem.usage(PROMPT, COMPLETION)
    if p == "call":
        parts: list[list[Any]] = [[gem.function_call("get_weather", ARGS)]]
    else:
        parts = [[piece] for piece in (FINAL_PIECES if p == "final" else ANSWER_PIECES)]
    if not stream:
        return Reply.json(gem.response([x for group in parts for x in group], usage_metadata=meta))
    chunks = [gem.chunk(group) for group in parts] + [gem.chunk(finish="STOP", usage_metadata=meta)]
    return Reply.sse(cut([gem.sse_body(chunks)], split))


def gemini_wire(name: str, make: Callable[[str], Provider], fake: Callable[..., Any]) -> Wire:
    """Gemini and Vertex: one body format, so one reply builder; Gemini's ids are derived (no ``id``)."""

    def install(answer: Callable[[Recorded, bool], Reply]) -> Any:
        return fake(generate=lambda r: answer(r, False), stream=lambda r: answer(r, True))

    def schema_sent(body: dict[str, Any]) -> Any:
        return body["generationConfig"]["responseSchema"]

    return Wire(
        name, "gemini-2.0-flash", make, install, gemini_reply, schema_sent, gemini_schema(SCHEMA), native_ids=False
    )


# --------------------------------------------------------------------------- Anthropic, Cohere, Bedrock, Ollama


def anthropic_reply(p: str, stream: bool, split: int | None) -> Reply:
    counts = anth.usage(PROMPT, COMPLETION)
    if not stream:
        if p == "call":
            return anth.message_reply(
                [anth.tool_use_block(CALL_ID, "get_weather", ARGS)], stop_reason="tool_use", usage_=counts
            )
        if p == "final":
            return anth.message_reply([anth.text_block(FINAL)], usage_=counts)
        return anth.message_reply(
            [anth.tool_use_block("toolu_fmt", "response", ANSWER)], stop_reason="tool_use", usage_=counts
        )
    if p == "call":
        blocks, stop = anth.tool_use_events(0, CALL_ID, "get_weather", ARG_PIECES), "tool_use"
    elif p == "final":
        blocks, stop = anth.text_block_events(0, FINAL_PIECES), "end_turn"
    else:
        blocks, stop = anth.tool_use_events(0, "toolu_fmt", "response", ANSWER_PIECES), "tool_use"
    events = [
        anth.message_start(input_tokens=PROMPT),
        anth.ping(),
        *blocks,
        anth.message_delta(stop, COMPLETION),
        anth.message_stop(),
    ]
    return Reply.sse(cut(events, split))


def cohere_reply(p: str, stream: bool, split: int | None) -> Reply:
    counts = coh.usage(PROMPT, COMPLETION)
    if not stream:
        if p == "call":
            call = coh.tool_call(CALL_ID, "get_weather", RAW)
            return coh.chat_reply(
                tool_calls=[call], tool_plan="I will look up the weather.", finish_reason="TOOL_CALL", usage_=counts
            )
        return coh.chat_reply(FINAL if p == "final" else ANSWER_TEXT, usage_=counts)
    if p == "call":
        body = [
            *coh.tool_plan_events(["I will ", "look it up."]),
            *coh.tool_call_events(0, CALL_ID, "get_weather", ARG_PIECES),
        ]
        end = coh.message_end("TOOL_CALL", counts)
    else:
        body, end = (
            coh.content_events(FINAL_PIECES if p == "final" else ANSWER_PIECES),
            coh.message_end("COMPLETE", counts),
        )
    return Reply.sse(cut([coh.message_start(), *body, end], split))


def bedrock_reply(p: str, stream: bool, split: int | None) -> Reply:
    counts = bed.usage(PROMPT, COMPLETION)
    if not stream:
        if p == "final":
            return Reply.json(bed.converse_response([FINAL], usage_counts=counts))
        name, tool_id, tool_input = (
            ("get_weather", CALL_ID, ARGS) if p == "call" else ("response", "tooluse_fmt", ANSWER)
        )
        block = {"toolUse": {"toolUseId": tool_id, "name": name, "input": tool_input}}
        return Reply.json(bed.converse_response([block], stop_reason="tool_use", usage_counts=counts))
    if p == "call":
        frames, stop = bed.tool_use_events(0, CALL_ID, "get_weather", ARG_PIECES), "tool_use"
    elif p == "final":
        frames, stop = bed.text_events(FINAL_PIECES), "end_turn"
    else:
        frames, stop = bed.tool_use_events(0, "tooluse_fmt", "response", ANSWER_PIECES), "tool_use"
    return bed.stream_reply(
        [b"".join([bed.message_start(), *frames, bed.message_stop(stop), bed.metadata(counts)])], pieces=split
    )


def ollama_reply(p: str, stream: bool, split: int | None) -> Reply:
    calls = [{"function": {"name": "get_weather", "arguments": ARGS}}] if p == "call" else None
    text = "" if p == "call" else FINAL if p == "final" else ANSWER_TEXT
    if not stream:
        return oll.chat_reply(text, tool_calls=calls, prompt_eval_count=PROMPT, eval_count=COMPLETION)
    pieces = [""] if p == "call" else FINAL_PIECES if p == "final" else ANSWER_PIECES
    lines = [oll.message_line(piece, tool_calls=calls) for piece in pieces]
    lines.append(oll.done_line(prompt_eval_count=PROMPT, eval_count=COMPLETION))
    return oll.ndjson_reply(cut(lines, split))


def path_handler(expected: str) -> Callable[[Callable[[Recorded, bool], Reply]], Any]:
    """A handler for wires whose fakes are builders only: check the path, answer by ``stream``."""

    def install(answer: Callable[[Recorded, bool], Reply]) -> Any:
        def handle(request: Recorded) -> Reply:
            if request.method != "POST" or request.path != expected:
                return Reply.json({"message": f"no route {request.path}"}, status=404)
            return answer(request, bool(request.json().get("stream")))

        return handle

    return install


def bedrock_handler(answer: Callable[[Recorded, bool], Reply]) -> Any:
    return bed.BedrockFake(converse=lambda r: answer(r, False), stream=lambda r: answer(r, True))


def anthropic_schema(body: dict[str, Any]) -> Any:
    return next(t["input_schema"] for t in body["tools"] if t["name"] == "response")


def bedrock_schema(body: dict[str, Any]) -> Any:
    return next(
        t["toolSpec"]["inputSchema"]["json"] for t in body["toolConfig"]["tools"] if t["toolSpec"]["name"] == "response"
    )


WIRES = [
    Wire(
        "openai",
        "gpt-4o-mini",
        lambda url: OpenAIProvider(api_key="sk-test", base_url=f"{url}/v1"),
        openai_handler(oai.OpenAIFake("sk-test")),
        openai_reply,
        openai_schema,
    ),
    Wire(
        "groq",
        "llama-3.3-70b-versatile",
        lambda url: preset("groq", api_key="gsk-test", base_url=f"{url}/openai/v1"),
        openai_handler(oai.OpenAIFake("gsk-test", prefix="/openai/v1")),
        openai_reply,
        openai_schema,
    ),
    Wire(
        "azure",
        "gpt4o-prod",
        lambda url: AzureOpenAIProvider(api_key="azure-key", endpoint=url),
        openai_handler(AzureFake("azure-key")),
        lambda p, stream, split: openai_reply(p, stream, split, lead=[prompt_filter_chunk()] if stream else []),
        openai_schema,
    ),
    gemini_wire("gemini", lambda url: GeminiProvider(api_key="test-key", base_url=url), gem.GeminiFake),
    gemini_wire(
        "vertex",
        lambda url: VertexGeminiProvider("demo-project", "us-central1", access_token="ya29.test-token", base_url=url),
        VertexFake,
    ),
    Wire(
        "anthropic",
        "claude-sonnet-4-5",
        lambda url: AnthropicProvider(api_key="sk-ant-test", base_url=url),
        path_handler("/v1/messages"),
        anthropic_reply,
        anthropic_schema,
    ),
    Wire(
        "cohere",
        "command-a-03-2025",
        lambda url: CohereProvider(api_key="co-test", base_url=url),
        path_handler("/v2/chat"),
        cohere_reply,
        lambda body: body["response_format"]["json_schema"],
        refuses=frozenset({"named"}),
    ),
    Wire(
        "bedrock",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        lambda url: BedrockProvider(
            bed.REGION,
            aws_access_key_id=bed.ACCESS_KEY,
            aws_secret_access_key=bed.SECRET_KEY,
            base_url=url,
            credential_chain=False,
        ),
        bedrock_handler,
        bedrock_reply,
        bedrock_schema,
        refuses=frozenset({"none", "image_url"}),
    ),
    Wire(
        "ollama",
        "llama3.2",
        lambda url: OllamaProvider(base_url=url),
        path_handler("/api/chat"),
        ollama_reply,
        lambda body: body["format"],
        native_ids=False,
        refuses=frozenset({"required", "named", "image_url"}),
    ),
]


class Scenario:
    """One wire's provider against its fake; ``split`` re-cuts stream bodies."""

    def __init__(self, wire: Wire, upstream: FakeUpstream) -> None:
        self.wire = wire
        self.upstream = upstream
        self.split: int | None = None
        upstream.handler = wire.handler(self._answer)
        self.provider = wire.make(upstream.url)

    def _answer(self, request: Recorded, stream: bool) -> Reply:
        return self.wire.reply(phase(request.body), stream, self.split)

    def request(self, *messages: Message, **kw: Any) -> ChatRequest:
        kw.setdefault("tools", [WEATHER])
        first = Message.user("What's the weather in Paris?")
        return ChatRequest(model=f"{self.wire.name}:{self.wire.model}", messages=[first, *messages], **kw)

    def followup(self, call: ToolCall) -> ChatRequest:
        return self.request(
            Message.assistant(None, tool_calls=[call]), Message.tool(call.id, TOOL_RESULT, name=call.name)
        )

    async def chat(self, request: ChatRequest) -> ChatResponse:
        return await self.provider.chat(self.wire.model, request, LIMITS)

    async def stream(self, request: ChatRequest, split: int | None) -> list[ChatStreamEvent]:
        self.split = split
        try:
            return [e async for e in self.provider.stream(self.wire.model, request, LIMITS)]
        finally:
            self.split = None


@pytest.fixture(params=WIRES, ids=[w.name for w in WIRES])
async def scenario(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Any:
    scene = Scenario(request.param, upstream)
    yield scene
    await scene.provider.aclose()


def check_call(call: ToolCall, wire: Wire) -> None:
    assert call.name == "get_weather"
    assert call.arguments == ARGS
    assert orjson.loads(call.raw_arguments) == ARGS
    assert call.id
    if wire.native_ids:
        assert call.id == CALL_ID


def check_usage(reply: ChatResponse) -> None:
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        PROMPT,
        COMPLETION,
        PROMPT + COMPLETION,
    )


def end_of(events: list[ChatStreamEvent]) -> ChatResponse:
    """The reply assembled from the events as the router assembles it (``end.response`` is optional)."""
    assert events[-1].type == "end" and sum(e.type == "end" for e in events) == 1
    usages = [e.usage for e in events if e.usage is not None]
    calls = [e.tool_call for e in events if e.type == "tool_call" and e.tool_call is not None]
    message = Message.assistant("".join(e.delta for e in events if e.type == "token") or None, tool_calls=calls or None)
    end = events[-1]
    assert end.finish_reason is not None and usages
    return ChatResponse(
        message=message, finish_reason=end.finish_reason, usage=usages[-1], provider=end.provider, model=end.model
    )


# --------------------------------------------------------------------------- the conversation


async def test_tool_conversation_chat(scenario: Scenario) -> None:
    first = await scenario.chat(scenario.request())
    assert first.finish_reason == "tool_calls"
    assert first.message.tool_calls is not None and len(first.message.tool_calls) == 1
    call = first.message.tool_calls[0]
    check_call(call, scenario.wire)
    check_usage(first)
    again = await scenario.chat(scenario.request())
    assert again.message.tool_calls == [call]  # the same answer gets the same id

    final = await scenario.chat(scenario.followup(call))
    assert (final.text, final.finish_reason, final.message.tool_calls) == (FINAL, "stop", None)
    check_usage(final)
    sent = scenario.upstream.requests[-1].body
    assert b"temp_c" in sent and b"get_weather" in sent
    if scenario.wire.native_ids:
        assert CALL_ID.encode() in sent  # the call id is echoed back with the result


async def test_tool_conversation_stream_matches_chat_at_any_split(scenario: Scenario) -> None:
    chat_call = (await scenario.chat(scenario.request())).message.tool_calls
    assert chat_call is not None
    streamed: list[ToolCall] = []
    for split in SPLITS:
        events = await scenario.stream(scenario.request(), split)
        calls = [e.tool_call for e in events if e.type == "tool_call"]
        assert len(calls) == 1 and calls[0] is not None
        call = calls[0]
        check_call(call, scenario.wire)
        assert (call.id, call.name, call.arguments) == (chat_call[0].id, chat_call[0].name, chat_call[0].arguments)
        reply = end_of(events)
        assert reply.finish_reason == "tool_calls" and reply.message.tool_calls == [call]
        check_usage(reply)
        streamed.append(call)

        events = await scenario.stream(scenario.followup(call), split)
        assert "".join(e.delta for e in events if e.type == "token") == FINAL
        reply = end_of(events)
        assert (reply.text, reply.finish_reason) == (FINAL, "stop")
        check_usage(reply)
    assert all(call == streamed[0] for call in streamed)  # identical however the bytes were cut


# --------------------------------------------------------------------------- structured output


async def test_json_schema_request_is_native_and_validates(scenario: Scenario) -> None:
    fmt = ResponseFormat(type="json_schema", json_schema=SCHEMA, name="response")
    reply = await scenario.chat(scenario.request(tools=None, response_format=fmt))
    assert reply.finish_reason == "stop" and reply.message.tool_calls is None
    assert parse_json_response(reply, fmt) == ANSWER
    check_usage(reply)
    body = scenario.upstream.requests[-1].json()
    assert scenario.wire.schema_sent(body) == scenario.wire.expected_schema

    for split in (None, 7):
        streamed = end_of(await scenario.stream(scenario.request(tools=None, response_format=fmt), split))
        assert parse_json_response(streamed, SCHEMA) == ANSWER
        assert streamed.finish_reason == "stop"


async def test_wrong_json_from_any_provider_is_the_same_typed_error(scenario: Scenario) -> None:
    fmt = ResponseFormat(type="json_schema", json_schema={**SCHEMA, "required": ["city", "temp", "humidity"]})
    reply = await scenario.chat(scenario.request(tools=None, response_format=fmt))
    with pytest.raises(errors.StructuredOutputError) as caught:
        parse_json_response(reply, fmt)
    assert caught.value.problems == ["$: 'humidity' is a required property"]
    assert caught.value.provider == scenario.wire.name


# --------------------------------------------------------------------------- tool_choice


CHOICES: dict[str, ToolChoice] = {
    "auto": "auto",
    "none": "none",
    "required": "required",
    "named": NamedToolChoice(name="get_weather"),
}


@pytest.mark.parametrize("choice", list(CHOICES))
async def test_tool_choice_is_mapped_or_refused_before_sending(scenario: Scenario, choice: str) -> None:
    request = scenario.request(tool_choice=CHOICES[choice])
    if choice in scenario.wire.refuses:
        with pytest.raises(errors.UnsupportedFeatureError):
            await scenario.chat(request)
        with pytest.raises(errors.UnsupportedFeatureError):
            await scenario.stream(request, None)
        assert scenario.upstream.requests == []
        return
    reply = await scenario.chat(request)
    assert reply.message.tool_calls is not None
    check_call(reply.message.tool_calls[0], scenario.wire)
    assert len(scenario.upstream.requests) == 1


# --------------------------------------------------------------------------- malformed tool calls

BROKEN = '{"city": "Par'


def malformed_reply(wire: str, stream: bool) -> Reply:
    """A tool call whose arguments cannot be read, in each wire's own way of getting it wrong."""
    if wire in ("openai", "groq", "azure"):
        if not stream:
            return oai.completion_reply(None, tool_calls=[oai.tool_call(CALL_ID, "get_weather", BROKEN)])
        return Reply.sse(oai.stream_events((), tool_calls=oai.tool_call_chunks(0, CALL_ID, "get_weather", [BROKEN])))
    if wire in ("gemini", "vertex"):  # Gemini reports it instead of sending it
        if not stream:
            return Reply.json(gem.response([], finish="MALFORMED_FUNCTION_CALL"))
        return Reply.sse([gem.sse_body([gem.chunk(finish="MALFORMED_FUNCTION_CALL")])])
    if wire == "anthropic":
        if not stream:
            return anth.message_reply([anth.tool_use_block(CALL_ID, "get_weather", BROKEN)], stop_reason="tool_use")  # type: ignore[arg-type]
        events = [anth.message_start(), *anth.tool_use_events(0, CALL_ID, "get_weather", [BROKEN])]
        return Reply.sse([*events, anth.message_delta("tool_use"), anth.message_stop()])
    if wire == "cohere":
        if not stream:
            return coh.chat_reply(tool_calls=[coh.tool_call(CALL_ID, "get_weather", BROKEN)], finish_reason="TOOL_CALL")
        events = [coh.message_start(), *coh.tool_call_events(0, CALL_ID, "get_weather", [BROKEN])]
        return Reply.sse([*events, coh.message_end("TOOL_CALL")])
    if wire == "bedrock":
        if not stream:
            block = {"toolUse": {"toolUseId": CALL_ID, "name": "get_weather", "input": BROKEN}}
            return Reply.json(bed.converse_response([block], stop_reason="tool_use"))
        frames = [
            bed.message_start(),
            *bed.tool_use_events(0, CALL_ID, "get_weather", [BROKEN]),
            bed.message_stop("tool_use"),
        ]
        return bed.stream_reply([*frames, bed.metadata()])
    assert wire == "ollama"
    calls = [{"function": {"name": "get_weather", "arguments": BROKEN}}]
    if not stream:
        return oll.chat_reply("", tool_calls=calls)
    return oll.ndjson_reply([oll.message_line("", tool_calls=calls), oll.done_line()])


async def test_malformed_tool_call_is_a_typed_retryable_error_never_an_empty_stop(scenario: Scenario) -> None:
    name = scenario.wire.name
    scenario.wire = Wire(**{**scenario.wire.__dict__, "reply": lambda p, stream, split: malformed_reply(name, stream)})
    with pytest.raises(errors.ProviderError) as chat_error:
        await scenario.chat(scenario.request())
    with pytest.raises(errors.ProviderError) as stream_error:
        await scenario.stream(scenario.request(), None)
    for exc in (chat_error.value, stream_error.value):
        assert exc.retryable and exc.fallback, f"{name}: {exc!r}"
        assert not isinstance(exc, errors.BadRequestError)
        assert exc.provider == name


# --------------------------------------------------------------------------- images

PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
IMAGES = {
    "image_base64": ImagePart(data=PIXEL, media_type="image/png"),
    "image_url": ImagePart(url="https://example.com/cat.png"),
}


@pytest.mark.parametrize("kind", list(IMAGES))
async def test_images_are_mapped_or_refused_clearly(scenario: Scenario, kind: str) -> None:
    image = IMAGES[kind]
    request = scenario.request(tools=None)
    request.messages[0] = Message.user([TextPart(text="What is in this picture?"), image])
    if kind in scenario.wire.refuses:
        with pytest.raises(errors.UnsupportedFeatureError):
            await scenario.chat(request)
        assert scenario.upstream.requests == []
        return
    await scenario.chat(request)
    sent = scenario.upstream.requests[-1].body.decode()
    assert (image.data or image.url or "") in sent


# --------------------------------------------------------------------------- through the router


async def test_the_router_sees_the_same_result_from_every_provider(scenario: Scenario) -> None:
    from polyroute import Router

    assert isinstance(scenario.provider, Provider)
    async with Router(timeout=10.0) as router:
        router.register(scenario.provider)
        reply = await router.chat(scenario.request())
        events = [e async for e in router.stream(scenario.followup(reply.message.tool_calls[0]))]  # type: ignore[index]
    assert (reply.provider, reply.model, reply.finish_reason) == (scenario.wire.name, scenario.wire.model, "tool_calls")
    assert reply.message.tool_calls is not None
    check_call(reply.message.tool_calls[0], scenario.wire)
    check_usage(reply)
    final = events[-1].response
    assert final is not None and (final.text, final.finish_reason, final.provider) == (
        FINAL,
        "stop",
        scenario.wire.name,
    )
    check_usage(final)
