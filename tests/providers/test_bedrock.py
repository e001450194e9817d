"""BedrockProvider against a local server speaking Converse / ConverseStream, SigV4 checked."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fakes.bedrock_server import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    BedrockFake,
    converse_response,
    error_reply,
    exception,
    message_start,
    message_stop,
    metadata,
    stream_reply,
    text_events,
    tool_use_events,
    usage,
)
from fakes.upstream import FakeUpstream, Pause, Reply
from polyroute import errors
from polyroute.providers._converse import converse_body
from polyroute.providers.base import CallLimits
from polyroute.providers.bedrock import BedrockProvider, default_base_url
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

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
LIMITS = CallLimits(connect=5.0, read=10.0)
WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.fixture(autouse=True)
def _no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read a developer's AWS setup, and never ask an instance-metadata endpoint."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_BEARER_TOKEN_BEDROCK",
        "BEDROCK_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model=f"bedrock:{MODEL}", messages=list(messages) or [Message.user("hi")], **kw)


def make(upstream: FakeUpstream, **kw: Any) -> BedrockProvider:
    kw.setdefault("aws_access_key_id", ACCESS_KEY)
    kw.setdefault("aws_secret_access_key", SECRET_KEY)
    return BedrockProvider(REGION, base_url=upstream.url, credential_chain=False, **kw)


@pytest.fixture
async def bedrock(upstream: FakeUpstream) -> AsyncIterator[BedrockProvider]:
    upstream.handler = BedrockFake()
    provider = make(upstream)
    yield provider
    await provider.aclose()


async def collect(provider: BedrockProvider, request: ChatRequest | None = None) -> list[ChatStreamEvent]:
    return [e async for e in provider.stream(MODEL, request or req(), LIMITS)]


async def streamed(upstream: FakeUpstream, reply: Reply, request: ChatRequest | None = None) -> list[ChatStreamEvent]:
    upstream.handler = BedrockFake(stream=reply)
    provider = make(upstream)
    try:
        return await collect(provider, request)
    finally:
        await provider.aclose()


# --------------------------------------------------------------------------- request mapping


def test_body_maps_system_turns_tools_and_inference_config() -> None:
    call = ToolCall(id="tooluse_1", name="get_weather", arguments={"city": "Oslo"}, raw_arguments='{"city":"Oslo"}')
    request = req(
        Message.system("Be brief."),
        Message.user("Weather in Oslo?"),
        Message.assistant("Checking.", tool_calls=[call]),
        Message.tool("tooluse_1", '{"temp": 3}'),
        Message.user("And tomorrow?"),
        tools=[WEATHER],
        tool_choice="auto",
        temperature=1.5,
        top_p=0.9,
        max_tokens=200,
        stop=["END"],
    )
    body, format_tool = converse_body(request)
    assert format_tool is None
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {"text": "Checking."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Oslo"}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "tooluse_1", "content": [{"json": {"temp": 3}}]}},
                {"text": "And tomorrow?"},
            ],
        },
    ]
    assert body["inferenceConfig"] == {"maxTokens": 200, "temperature": 1.0, "topP": 0.9, "stopSequences": ["END"]}
    spec = body["toolConfig"]["tools"][0]["toolSpec"]
    assert spec == {
        "name": "get_weather",
        "description": "Weather for a city",
        "inputSchema": {"json": WEATHER.parameters},
    }
    assert body["toolConfig"]["toolChoice"] == {"auto": {}}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("required", {"any": {}}), (NamedToolChoice(name="get_weather"), {"tool": {"name": "get_weather"}}), (None, None)],
)
def test_tool_choice_mapping(choice: Any, expected: Any) -> None:
    body, _ = converse_body(req(tools=[WEATHER], tool_choice=choice))
    assert body["toolConfig"].get("toolChoice") == expected


def test_tool_choice_none_is_refused_clearly() -> None:
    with pytest.raises(errors.UnsupportedFeatureError, match="none"):
        converse_body(req(tools=[WEATHER], tool_choice="none"))


def test_images_as_bytes_data_url_or_s3_and_web_urls_refused() -> None:
    parts = [
        TextPart(text="what is this?"),
        ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
        ImagePart(url="data:image/jpeg;base64,/9j/4AAQ"),
        ImagePart(url="s3://bucket/cat.webp"),
    ]
    body, _ = converse_body(req(Message.user(parts)))
    blocks = body["messages"][0]["content"]
    assert blocks[1] == {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
    assert blocks[2] == {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}}
    assert blocks[3] == {"image": {"format": "webp", "source": {"s3Location": {"uri": "s3://bucket/cat.webp"}}}}
    with pytest.raises(errors.UnsupportedFeatureError):
        converse_body(req(Message.user([ImagePart(url="https://example.com/cat.png")])))
    with pytest.raises(errors.UnsupportedFeatureError):
        converse_body(req(Message.user([ImagePart(data="AAAA", media_type="image/tiff")])))


def test_json_schema_becomes_a_forced_format_tool() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    body, format_tool = converse_body(
        req(response_format=ResponseFormat(type="json_schema", json_schema=schema, name="result"))
    )
    assert format_tool == "result"
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": schema}
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "result"}}
    # with real tools the model may call them or answer through the format tool
    body, _ = converse_body(req(tools=[WEATHER], response_format=ResponseFormat(type="json_object")))
    assert body["toolConfig"]["toolChoice"] == {"any": {}}


# --------------------------------------------------------------------------- config, signing, auth


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    provider = BedrockProvider(credential_chain=False)
    assert provider.base_url == default_base_url("eu-west-1") == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert provider.missing_config() == "AWS_ACCESS_KEY_ID"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    provider = BedrockProvider.from_env(credential_chain=False)
    assert (provider.region, provider.missing_config()) == ("us-west-2", None)
    assert BedrockProvider(environ={}, credential_chain=False).missing_config() == "AWS_REGION"
    assert BedrockProvider(environ={"AWS_REGION": "x", "AWS_BEARER_TOKEN_BEDROCK": "k"}).missing_config() is None


def test_credential_chain_is_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIACHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    provider = BedrockProvider(REGION, environ={})  # nothing explicit: the chain finds the env keys
    assert provider.credentials().access_key == "AKIACHAIN"


async def test_chat_is_sigv4_signed_over_the_encoded_model_path(
    upstream: FakeUpstream, bedrock: BedrockProvider
) -> None:
    reply = await bedrock.chat(MODEL, req(Message.user("hello there")), LIMITS)
    assert (reply.text, reply.finish_reason, reply.provider, reply.model) == ("hello there", "stop", "bedrock", MODEL)
    sent = upstream.requests[0]
    assert sent.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert f"/{REGION}/bedrock/aws4_request, SignedHeaders=" in sent.headers["authorization"]
    assert SECRET_KEY not in str(sent.headers)
    assert upstream.handler.model_ids == [MODEL]  # type: ignore[attr-defined]


async def test_session_token_is_sent_and_signed(upstream: FakeUpstream) -> None:
    upstream.handler = BedrockFake(session_token="FwoGZXIvYXdzE-session")
    provider = make(upstream, aws_session_token="FwoGZXIvYXdzE-session")
    await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    assert "x-amz-security-token" in upstream.requests[0].headers["authorization"]


async def test_wrong_secret_fails_signature_check_as_authentication_error(upstream: FakeUpstream) -> None:
    upstream.handler = BedrockFake()
    provider = make(upstream, aws_secret_access_key="not-the-secret")
    with pytest.raises(errors.AuthenticationError) as caught:
        await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    assert caught.value.status == 403
    assert "does not match" in (caught.value.provider_message or "")
    assert "not-the-secret" not in str(caught.value.details())


async def test_bedrock_api_key_is_a_bearer_token(upstream: FakeUpstream) -> None:
    upstream.handler = BedrockFake(bearer="ABSK-bedrock-key")
    provider = BedrockProvider(REGION, api_key="ABSK-bedrock-key", base_url=upstream.url, credential_chain=False)
    await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    assert upstream.requests[0].headers["authorization"] == "Bearer ABSK-bedrock-key"


async def test_missing_credentials_send_nothing(upstream: FakeUpstream) -> None:
    provider = BedrockProvider(REGION, base_url=upstream.url, credential_chain=False, environ={})
    with pytest.raises(errors.NotConfiguredError) as caught:
        await provider.chat(MODEL, req(), LIMITS)
    assert caught.value.env_var == "AWS_ACCESS_KEY_ID"
    assert upstream.requests == []


# --------------------------------------------------------------------------- Converse replies


async def test_tool_use_reply_and_usage_with_cache(upstream: FakeUpstream) -> None:
    blocks = [
        {"text": "Let me check."},
        {"toolUse": {"toolUseId": "tooluse_abc", "name": "get_weather", "input": {"city": "Oslo"}}},
    ]
    upstream.handler = BedrockFake(
        converse=converse_response(blocks, stop_reason="tool_use", usage_counts=usage(10, 5, cache_read=90))
    )
    provider = make(upstream)
    reply = await provider.chat(MODEL, req(tools=[WEATHER]), LIMITS)
    await provider.aclose()
    assert reply.finish_reason == "tool_calls" and reply.text == "Let me check."
    assert reply.message.tool_calls == [
        ToolCall(id="tooluse_abc", name="get_weather", arguments={"city": "Oslo"}, raw_arguments='{"city":"Oslo"}')
    ]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.cached_tokens) == (100, 5, 90)
    assert reply.usage.total_tokens == 105


async def test_format_tool_answer_becomes_text(upstream: FakeUpstream) -> None:
    block = {"toolUse": {"toolUseId": "tooluse_f", "name": "response", "input": {"answer": 42}}}
    upstream.handler = BedrockFake(converse=converse_response([block], stop_reason="tool_use"))
    provider = make(upstream)
    reply = await provider.chat(MODEL, req(response_format=ResponseFormat(type="json_object")), LIMITS)
    await provider.aclose()
    assert (reply.text, reply.finish_reason, reply.message.tool_calls) == ('{"answer":42}', "stop", None)


@pytest.mark.parametrize(
    ("stop_reason", "content", "expected"),
    [
        ("max_tokens", ["cut"], "length"),
        ("stop_sequence", ["done"], "stop"),
        ("guardrail_intervened", ["Sorry, partly"], "content_filter"),
    ],
)
async def test_stop_reasons(upstream: FakeUpstream, stop_reason: str, content: list[str], expected: str) -> None:
    upstream.handler = BedrockFake(converse=converse_response(content, stop_reason=stop_reason))
    provider = make(upstream)
    reply = await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    assert reply.finish_reason == expected


async def test_filtered_without_output_raises(upstream: FakeUpstream) -> None:
    upstream.handler = BedrockFake(converse=converse_response([], stop_reason="content_filtered"))
    provider = make(upstream)
    with pytest.raises(errors.ContentFilteredError):
        await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()


async def test_unreadable_reply_is_typed(upstream: FakeUpstream) -> None:
    upstream.handler = BedrockFake(converse={"output": {"message": {"content": [{"toolUse": {"name": "x"}}]}}})
    provider = make(upstream)
    with pytest.raises(errors.ProviderUnavailableError):
        await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            error_reply(
                429, "ThrottlingException", "Too many requests, please wait before trying again.", {"retry-after": "3"}
            ),
            errors.RateLimitedError,
        ),
        (
            error_reply(
                403, "AccessDeniedException", "You don't have access to the model with the specified model ID."
            ),
            errors.PermissionDeniedError,
        ),
        (
            error_reply(404, "ResourceNotFoundException", "Could not resolve the foundation model"),
            errors.ModelNotFoundError,
        ),
        (error_reply(400, "ValidationException", "Malformed input request"), errors.BadRequestError),
        (
            error_reply(400, "ValidationException", "Input is too long for requested model."),
            errors.ContextLengthExceededError,
        ),
        (error_reply(503, "ServiceUnavailableException", "Service unavailable"), errors.ProviderUnavailableError),
        (error_reply(424, "ModelErrorException", "The model failed"), errors.ProviderUnavailableError),
        (error_reply(408, "ModelTimeoutException", "Model timed out"), errors.TimeoutError),
        (error_reply(400, "ServiceQuotaExceededException", "quota"), errors.RateLimitedError),
    ],
)
async def test_http_errors_map_by_error_type(upstream: FakeUpstream, reply: Reply, expected: type[Exception]) -> None:
    upstream.handler = BedrockFake(converse=reply)
    provider = make(upstream)
    with pytest.raises(expected) as caught:
        await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    assert type(caught.value) is expected
    if isinstance(caught.value, errors.RateLimitedError) and caught.value.status == 429:
        assert caught.value.retry_after == 3.0


async def test_embeddings_are_refused_clearly(bedrock: BedrockProvider) -> None:
    with pytest.raises(errors.UnsupportedFeatureError):
        await bedrock.embed("amazon.titan-embed-text-v2:0", ["a"], LIMITS)


# --------------------------------------------------------------------------- ConverseStream


TOOL_STREAM = [
    message_start(),
    *text_events(["Let", " me check."], index=0),
    *tool_use_events(1, "tooluse_xyz", "get_weather", ['{"ci', 'ty": "Os', 'lo"}']),
    message_stop("tool_use"),
    metadata(usage(30, 12)),
]


@pytest.mark.parametrize("pieces", [None, 1, 5, 13, 64])
async def test_stream_decodes_frames_however_they_are_split(upstream: FakeUpstream, pieces: int | None) -> None:
    events = await streamed(upstream, stream_reply(TOOL_STREAM, pieces=pieces), req(tools=[WEATHER]))
    assert upstream.requests[0].path.endswith("/converse-stream")
    assert [e.type for e in events] == ["token", "token", "tool_call", "usage", "end"]
    assert "".join(e.delta for e in events) == "Let me check."
    call = events[2].tool_call
    assert call == ToolCall(
        id="tooluse_xyz", name="get_weather", arguments={"city": "Oslo"}, raw_arguments='{"city": "Oslo"}'
    )
    end = events[-1]
    assert end.finish_reason == "tool_calls" and end.usage is not None and end.usage.total_tokens == 42
    assert end.response is not None and end.response.message.tool_calls == [call]


async def test_stream_format_tool_input_is_relayed_as_text(upstream: FakeUpstream) -> None:
    frames = [
        message_start(),
        *tool_use_events(0, "t1", "response", ['{"a"', ": 1}"]),
        message_stop("tool_use"),
        metadata(),
    ]
    events = await streamed(upstream, stream_reply(frames), req(response_format=ResponseFormat(type="json_object")))
    assert [e.delta for e in events if e.type == "token"] == ['{"a"', ": 1}"]
    assert events[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("throttlingException", errors.RateLimitedError),
        ("modelStreamErrorException", errors.ProviderUnavailableError),
        ("internalServerException", errors.ProviderUnavailableError),
        ("serviceUnavailableException", errors.ProviderUnavailableError),
        ("validationException", errors.BadRequestError),
    ],
)
async def test_stream_exceptions_are_typed(upstream: FakeUpstream, kind: str, expected: type[Exception]) -> None:
    frames = [message_start(), *text_events(["par"]), exception(kind, "something happened")]
    upstream.handler = BedrockFake(stream=stream_reply(frames))
    provider = make(upstream)
    seen: list[ChatStreamEvent] = []
    with pytest.raises(expected) as caught:
        async for event in provider.stream(MODEL, req(), LIMITS):
            seen.append(event)
    await provider.aclose()
    assert type(caught.value) is expected
    assert caught.value.provider_message == "something happened"
    assert [e.delta for e in seen] == ["par"]


async def test_corrupt_crc_is_a_malformed_stream(upstream: FakeUpstream) -> None:
    good = text_events(["hello"])[0]
    bad = good[:-4] + struct.pack("!I", zlib.crc32(good[:-4]) ^ 1)
    upstream.handler = BedrockFake(stream=stream_reply([message_start(), bad, message_stop()]))
    provider = make(upstream)
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await collect(provider)
    await provider.aclose()
    assert caught.value.kind == "malformed"


async def test_stream_without_message_stop_is_truncated(upstream: FakeUpstream) -> None:
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await streamed(upstream, stream_reply([message_start(), *text_events(["hi"])]))
    assert caught.value.kind == "truncated"


async def test_stream_dropped_mid_frame_is_interrupted(upstream: FakeUpstream) -> None:
    data = b"".join([message_start(), *text_events(["hi"])])
    reply = stream_reply([data[:-7]], disconnect=True)
    with pytest.raises(errors.StreamInterruptedError):
        await streamed(upstream, reply)


async def test_stream_filtered_before_output_raises(upstream: FakeUpstream) -> None:
    with pytest.raises(errors.ContentFilteredError):
        await streamed(upstream, stream_reply([message_start(), message_stop("content_filtered"), metadata()]))


async def test_stream_http_error_before_body(upstream: FakeUpstream) -> None:
    with pytest.raises(errors.RateLimitedError):
        await streamed(upstream, error_reply(429, "ThrottlingException", "slow down"))


async def test_default_stream_without_metadata_still_ends(upstream: FakeUpstream) -> None:
    events = await streamed(upstream, stream_reply([message_start(), *text_events(["a", "b"]), message_stop()]))
    assert [e.type for e in events] == ["token", "token", "usage", "end"]
    assert events[-1].finish_reason == "stop"


async def test_unknown_stream_exception_is_a_provider_error_interrupt(upstream: FakeUpstream) -> None:
    frames = [message_start(), exception("brandNewException", "what is this")]
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await streamed(upstream, stream_reply(frames))
    assert caught.value.kind == "provider_error" and caught.value.status is None
    assert "brandNewException" in caught.value.message


async def test_stream_ends_at_metadata_even_if_the_connection_stays_open(upstream: FakeUpstream) -> None:
    data = b"".join([message_start(), *text_events(["ok"]), message_stop(), metadata(usage(3, 1))])
    reply = Reply(200, {"content-type": "application/vnd.amazon.eventstream"}, [data, Pause(5.0)], chunked=True)
    upstream.handler = BedrockFake(stream=reply)
    provider = make(upstream)
    events = [e async for e in provider.stream(MODEL, req(), CallLimits(connect=5.0, read=2.0))]
    await provider.aclose()
    assert [e.type for e in events] == ["token", "usage", "end"]
    assert events[-1].usage is not None and events[-1].usage.total_tokens == 4
