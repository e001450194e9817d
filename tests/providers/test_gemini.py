"""GeminiProvider against a local server that speaks the Generative Language API wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fakes.gemini_server import (
    GeminiFake,
    blocked_prompt,
    chunk,
    embeddings,
    error_body,
    error_info,
    error_reply,
    function_call,
    rate_limited,
    response,
    retry_info,
    sse_reply,
    text,
    usage,
)
from fakes.upstream import FakeUpstream, Reply
from polyroute import Router, errors
from polyroute.providers import Provider
from polyroute.providers.base import CallLimits
from polyroute.providers.gemini import GeminiProvider, gemini_schema, to_gemini_request
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

KEY = "AIza-test-secret-key"
MODEL = "gemini-2.0-flash"
LIMITS = CallLimits(connect=5.0, read=10.0)


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model=f"gemini:{MODEL}", messages=list(messages) or [Message.user("hi")], **kw)


@pytest.fixture
async def gemini(upstream: FakeUpstream) -> AsyncIterator[GeminiProvider]:
    upstream.handler = GeminiFake(api_key=KEY)
    provider = GeminiProvider(api_key=KEY, base_url=upstream.url)
    yield provider
    await provider.aclose()


async def collect(provider: GeminiProvider, request: ChatRequest | None = None) -> list[ChatStreamEvent]:
    return [e async for e in provider.stream(MODEL, request or req(), LIMITS)]


async def collect_until_error(
    provider: GeminiProvider, request: ChatRequest | None = None
) -> tuple[list[ChatStreamEvent], BaseException]:
    seen: list[ChatStreamEvent] = []
    with pytest.raises(errors.PolyrouteError) as caught:
        async for event in provider.stream(MODEL, request or req(), LIMITS):
            seen.append(event)
    return seen, caught.value


# --------------------------------------------------------------------------- URL, key, config


async def test_chat_posts_to_generate_content_with_key_only_in_header(
    upstream: FakeUpstream, gemini: GeminiProvider
) -> None:
    resp = await gemini.chat(MODEL, req(Message.user("echo me")), LIMITS)
    assert resp.text == "echo me"
    assert (resp.provider, resp.model, resp.finish_reason, resp.id) == ("gemini", MODEL, "stop", "resp-1")
    sent = upstream.requests[-1]
    assert sent.method == "POST"
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY
    assert "authorization" not in sent.headers
    assert KEY not in sent.query and "key=" not in sent.query
    assert sent.headers["content-type"] == "application/json"


async def test_an_error_object_under_a_200_keeps_its_status_and_message(
    upstream: FakeUpstream, gemini: GeminiProvider
) -> None:
    body = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}
    upstream.handler = lambda r: Reply.json(body)
    with pytest.raises(errors.RateLimitedError) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert "exhausted" in (caught.value.provider_message or caught.value.message)


async def test_stream_url_has_only_alt_sse_in_query(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    await collect(gemini)
    sent = upstream.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert sent.query == "alt=sse"
    assert sent.headers["x-goog-api-key"] == KEY


async def test_model_id_with_models_prefix(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    await gemini.chat(f"models/{MODEL}", req(), LIMITS)
    assert upstream.requests[-1].path == f"/v1beta/models/{MODEL}:generateContent"


@pytest.mark.parametrize("bad", ["../../v1/secret", "gemini?key=x", "a b", ""])
async def test_model_id_that_would_change_the_url_is_refused(
    upstream: FakeUpstream, gemini: GeminiProvider, bad: str
) -> None:
    with pytest.raises(errors.ModelNotFoundError):
        await gemini.chat(bad, req(), LIMITS)
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("suffix", "api_version", "expected"),
    [
        ("", "v1beta", "/v1beta"),
        ("/", "v1beta", "/v1beta"),
        ("/v1beta", "v1beta", "/v1beta"),
        ("/v1beta/", "v1beta", "/v1beta"),
        ("/v1", "v1beta", "/v1"),
        ("/v1alpha", "v1beta", "/v1alpha"),
        ("", "v1", "/v1"),
        ("/proxy/gemini", "v1beta", "/proxy/gemini/v1beta"),
    ],
)
async def test_base_url_with_and_without_version_segment(
    upstream: FakeUpstream, suffix: str, api_version: str, expected: str
) -> None:
    seen: list[str] = []

    def handler(request: Any) -> Reply:
        seen.append(request.path)
        return Reply.json(response(["ok"]))

    upstream.handler = handler
    provider = GeminiProvider(KEY, upstream.url + suffix, api_version=api_version)
    try:
        assert (await provider.chat(MODEL, req(), LIMITS)).text == "ok"
    finally:
        await provider.aclose()
    assert seen == [f"{expected}/models/{MODEL}:generateContent"]


async def test_missing_key_is_not_configured_and_sends_nothing(upstream: FakeUpstream) -> None:
    provider = GeminiProvider(base_url=upstream.url)
    assert provider.missing_config() == "GEMINI_API_KEY"
    for call in (
        provider.chat(MODEL, req(), LIMITS),
        provider.embed("text-embedding-004", ["x"], LIMITS),
    ):
        with pytest.raises(errors.NotConfiguredError) as caught:
            await call
        assert caught.value.env_var == "GEMINI_API_KEY"
        assert "GEMINI_API_KEY" in str(caught.value)
    with pytest.raises(errors.NotConfiguredError):
        await collect(provider)
    assert upstream.requests == []


def test_from_env_prefers_gemini_key_and_falls_back_to_google_key() -> None:
    assert GeminiProvider.from_env(environ={"GOOGLE_API_KEY": "g"}).api_key == "g"
    both = GeminiProvider.from_env(environ={"GOOGLE_API_KEY": "g", "GEMINI_API_KEY": "m"})
    assert both.api_key == "m"
    none = GeminiProvider.from_env(environ={})
    assert none.api_key is None and none.missing_config() == "GEMINI_API_KEY"
    assert none.base_url == "https://generativelanguage.googleapis.com/v1beta"


def test_from_env_base_url_and_endpoint() -> None:
    env = {"GEMINI_API_KEY": "k", "GEMINI_ENDPOINT": "http://127.0.0.1:9/v1"}
    assert GeminiProvider.from_env(environ=env).base_url == "http://127.0.0.1:9/v1"
    env["GEMINI_BASE_URL"] = "http://127.0.0.1:8"
    provider = GeminiProvider.from_env("gem2", environ=env)
    assert provider.base_url == "http://127.0.0.1:8/v1beta"
    assert provider.name == "gem2"


def test_from_env_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "from-process")
    assert GeminiProvider.from_env().api_key == "from-process"


def test_capabilities_and_protocol() -> None:
    provider = GeminiProvider(KEY)
    assert isinstance(provider, Provider)
    assert all(provider.capabilities.as_dict().values())


# --------------------------------------------------------------------------- request mapping


def test_system_messages_become_one_system_instruction() -> None:
    body = to_gemini_request(
        req(Message.system("Be brief."), Message.system("Answer in French."), Message.user("Hello"))
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nAnswer in French."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]
    assert "generationConfig" not in body and "tools" not in body and "toolConfig" not in body


def test_system_only_prompt_is_sent_as_user_content() -> None:
    body = to_gemini_request(req(Message.system("Say hi.")))
    assert "systemInstruction" not in body
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hi."}]}]


def test_roles_map_and_consecutive_same_role_turns_merge() -> None:
    body = to_gemini_request(
        req(
            Message.user("one"),
            Message.user("two"),
            Message.assistant("three"),
            Message.assistant("four"),
            Message.user("five"),
        )
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}, {"text": "four"}]},
        {"role": "user", "parts": [{"text": "five"}]},
    ]


def test_images_inline_data_and_file_uris() -> None:
    content: list[Any] = [
        TextPart(text="What is in these?"),
        ImagePart(data="aGVsbG8=", media_type="image/png"),
        ImagePart(url="https://example.com/cat.jpeg"),
        ImagePart(url="gs://bucket/scan", media_type="application/pdf"),
        ImagePart(url="data:image/webp;base64,UklGRg=="),
        ImagePart(url="https://example.com/no-extension"),
    ]
    parts = to_gemini_request(req(Message.user(content)))["contents"][0]["parts"]
    assert parts == [
        {"text": "What is in these?"},
        {"inlineData": {"mimeType": "image/png", "data": "aGVsbG8="}},
        {"fileData": {"fileUri": "https://example.com/cat.jpeg", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "gs://bucket/scan", "mimeType": "application/pdf"}},
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"fileData": {"fileUri": "https://example.com/no-extension"}},
    ]


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "ftp://x/y.png", "data:image/png,raw-not-base64"])
async def test_unsupported_image_source_is_a_typed_error(
    upstream: FakeUpstream, gemini: GeminiProvider, url: str
) -> None:
    with pytest.raises(errors.UnsupportedFeatureError) as caught:
        await gemini.chat(MODEL, req(Message.user([ImagePart(url=url)])), LIMITS)
    assert (caught.value.provider, caught.value.model) == ("gemini", MODEL)
    assert upstream.requests == []


def test_tool_calls_and_results_become_function_call_and_response_parts() -> None:
    calls = [
        ToolCall(id="c1", name="get_weather", arguments={"city": "Paris"}),
        ToolCall(id="c2", name="get_time", raw_arguments='{"tz": "CET"}'),
    ]
    body = to_gemini_request(
        req(
            Message.user("Weather and time in Paris?"),
            Message.assistant("Let me check.", tool_calls=calls),
            Message.tool("c1", '{"temp": 21, "unit": "C"}'),
            Message.tool("c2", "14:05"),
            Message.tool("c9", "[1, 2]", name="explicit_name"),
            Message.user("Thanks"),
        )
    )
    model_turn, results = body["contents"][1], body["contents"][2]
    assert model_turn == {
        "role": "model",
        "parts": [
            {"text": "Let me check."},
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "skip_thought_signature_validator",
            },
            {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}},
        ],
    }
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21, "unit": "C"}}},
            {"functionResponse": {"name": "get_time", "response": {"result": "14:05"}}},
            {"functionResponse": {"name": "explicit_name", "response": {"result": "[1, 2]"}}},
            {"text": "Thanks"},
        ],
    }
    assert len(body["contents"]) == 3


async def test_tool_result_for_unknown_call_without_name_is_bad_request(
    upstream: FakeUpstream, gemini: GeminiProvider
) -> None:
    with pytest.raises(errors.BadRequestError) as caught:
        await gemini.chat(MODEL, req(Message.user("x"), Message.tool("nope", "result")), LIMITS)
    assert caught.value.provider == "gemini"
    assert upstream.requests == []


def test_tools_become_function_declarations_with_gemini_schema() -> None:
    params = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "city": {"type": "string", "description": "City name", "minLength": 1},
            "unit": {"enum": ["C", "F"]},
            "days": {"type": ["integer", "null"], "exclusiveMinimum": 0, "format": "int32"},
            "when": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "format": "email"},
            "place": {"$ref": "#/$defs/Place"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Note"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "maxItems": 3},
        },
        "required": ["city", "ghost"],
        "$defs": {
            "Place": {"type": "object", "properties": {"lat": {"type": "number"}}, "additionalProperties": False}
        },
    }
    body = to_gemini_request(
        req(
            tools=[
                Tool(name="forecast", description="Weather forecast", parameters=params),
                Tool(name="ping"),
            ]
        )
    )
    declarations = body["tools"][0]["functionDeclarations"]
    assert declarations[1] == {"name": "ping"}
    assert declarations[0] == {
        "name": "forecast",
        "description": "Weather forecast",
        "parameters": {
            "type": "OBJECT",
            "properties": {
                "city": {"type": "STRING", "description": "City name", "minLength": 1},
                "unit": {"type": "STRING", "enum": ["C", "F"]},
                "days": {"type": "INTEGER", "format": "int32", "nullable": True},
                "when": {"type": "STRING", "format": "date-time"},
                "email": {"type": "STRING"},
                "place": {"type": "OBJECT", "properties": {"lat": {"type": "NUMBER"}}},
                "note": {"type": "STRING", "default": None, "title": "Note", "nullable": True},
                "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3},
            },
            "required": ["city"],
        },
    }
    assert "toolConfig" not in body


def test_recursive_schema_is_refused() -> None:
    node = {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
    schema = {"$ref": "#/$defs/Node", "$defs": {"Node": node}}
    with pytest.raises(errors.UnsupportedFeatureError):
        gemini_schema(schema)
    with pytest.raises(errors.UnsupportedFeatureError):
        gemini_schema({"$ref": "https://example.com/remote.json"})
    with pytest.raises(errors.UnsupportedFeatureError):
        gemini_schema({"$ref": "#/definitions/A", "definitions": ["not", "a", "mapping"]})


def test_schema_unions_and_consts() -> None:
    assert gemini_schema({"anyOf": [{"type": "string"}, {"type": "integer"}]}) == {
        "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]
    }
    assert gemini_schema({"const": "fixed"}) == {"enum": ["fixed"], "type": "STRING"}
    assert gemini_schema({"type": ["string", "number"]}) == {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}
    assert gemini_schema({"allOf": [{"$ref": "#/definitions/A"}], "description": "outer", "definitions": {
        "A": {"type": "string", "description": "inner"}}}) == {"type": "STRING", "description": "outer"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (NamedToolChoice(name="lookup"), {"mode": "ANY", "allowedFunctionNames": ["lookup"]}),
    ],
)
def test_tool_choice_modes(choice: Any, expected: dict[str, Any]) -> None:
    body = to_gemini_request(req(tools=[Tool(name="lookup")], tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_generation_config_fields() -> None:
    body = to_gemini_request(req(temperature=0.3, top_p=0.9, max_tokens=256, stop=["END", "STOP"]))
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 256,
        "stopSequences": ["END", "STOP"],
    }


def test_response_formats() -> None:
    as_json = to_gemini_request(req(response_format=ResponseFormat(type="json_object")))
    assert as_json["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    structured = to_gemini_request(req(response_format=ResponseFormat(type="json_schema", json_schema=schema)))
    assert structured["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"answer": {"type": "STRING"}}, "required": ["answer"]},
    }
    assert "generationConfig" not in to_gemini_request(req(response_format=ResponseFormat(type="text")))


async def test_request_body_reaches_the_server(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    request = req(
        Message.system("sys"), Message.user("hello"), temperature=0.5, tools=[Tool(name="f")], tool_choice="auto"
    )
    await gemini.chat(MODEL, request, LIMITS)
    assert upstream.requests[-1].json() == to_gemini_request(request)


# --------------------------------------------------------------------------- responses


async def test_response_text_function_calls_and_usage(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = GeminiFake(
        api_key=KEY,
        generate=response(
            [
                text("thinking about it", thought=True),
                "Checking ",
                "two cities.",
                function_call("get_weather", {"city": "Paris", "days": 2}),
                function_call("get_weather", {"city": "Oslo"}, id="given-id"),
                function_call("now"),
            ],
            usage_metadata=usage(120, 30, cached=100, thoughts=12, total=162),
            response_id="abc",
        ),
    )
    resp = await gemini.chat(MODEL, req(), LIMITS)
    assert resp.text == "Checking two cities."
    assert resp.finish_reason == "tool_calls"
    assert resp.id == "abc"
    calls = resp.message.tool_calls or []
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_0", "get_weather", {"city": "Paris", "days": 2}),
        ("given-id", "get_weather", {"city": "Oslo"}),
        ("call_2", "now", {}),
    ]
    assert orjson.loads(calls[0].raw_arguments) == {"city": "Paris", "days": 2}
    assert calls[2].raw_arguments == "{}"
    u = resp.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens, u.reasoning_tokens) == (
        120, 42, 162, 100, 12,
    )


@pytest.mark.parametrize(
    ("parts", "finish", "expected"),
    [
        (["cut off"], "MAX_TOKENS", "length"),
        (["partial"], "SAFETY", "content_filter"),
        (["done"], "OTHER", "stop"),
        (["x"], "MALFORMED_FUNCTION_CALL", "error"),
        ([], "STOP", "stop"),
    ],
)
async def test_finish_reasons(
    upstream: FakeUpstream, gemini: GeminiProvider, parts: list[str], finish: str, expected: str
) -> None:
    upstream.handler = GeminiFake(api_key=KEY, generate=response(parts, finish=finish))
    assert (await gemini.chat(MODEL, req(), LIMITS)).finish_reason == expected


@pytest.mark.parametrize("finish", ["SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII"])
async def test_filtered_answer_without_content_is_content_filtered(
    upstream: FakeUpstream, gemini: GeminiProvider, finish: str
) -> None:
    upstream.handler = GeminiFake(api_key=KEY, generate=response([], finish=finish))
    with pytest.raises(errors.ContentFilteredError) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert finish in str(caught.value)
    assert caught.value.provider_message == finish


async def test_blocked_prompt_is_content_filtered(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = GeminiFake(api_key=KEY, generate=blocked_prompt("PROHIBITED_CONTENT"))
    with pytest.raises(errors.ContentFilteredError) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert "PROHIBITED_CONTENT" in str(caught.value)


async def test_malformed_function_call_without_content_is_retryable(
    upstream: FakeUpstream, gemini: GeminiProvider
) -> None:
    upstream.handler = GeminiFake(api_key=KEY, generate=response([], finish="MALFORMED_FUNCTION_CALL"))
    with pytest.raises(errors.ProviderError) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert caught.value.retryable and caught.value.fallback


async def test_odd_usage_values_are_ignored_not_raised(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    odd = {"promptTokenCount": "7", "candidatesTokenCount": None, "totalTokenCount": 3.5, "thoughtsTokenCount": 2}
    upstream.handler = GeminiFake(api_key=KEY, generate=response(["ok"], usage_metadata=odd))
    u = (await gemini.chat(MODEL, req(), LIMITS)).usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.reasoning_tokens) == (0, 2, 2, 2)


@pytest.mark.parametrize("body", [{"candidates": []}, [1, 2]])
async def test_answer_without_candidates_is_unavailable(
    upstream: FakeUpstream, gemini: GeminiProvider, body: Any
) -> None:
    upstream.handler = lambda r: Reply.json(body)
    with pytest.raises(errors.ProviderUnavailableError):
        await gemini.chat(MODEL, req(), LIMITS)


# --------------------------------------------------------------------------- HTTP errors


async def test_invalid_api_key_is_authentication_error(upstream: FakeUpstream) -> None:
    upstream.handler = GeminiFake(api_key="the-right-key")
    provider = GeminiProvider(KEY, upstream.url)
    try:
        with pytest.raises(errors.AuthenticationError) as caught:
            await provider.chat(MODEL, req(), LIMITS)
        with pytest.raises(errors.AuthenticationError):
            await collect(provider)
    finally:
        await provider.aclose()
    exc = caught.value
    assert exc.status == 400
    assert exc.provider_message == "API key not valid. Please pass a valid API key."
    assert KEY not in str(exc) and KEY not in repr(exc.details())


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        (error_reply(400, "Invalid JSON payload received. Unknown name \"foo\""), errors.BadRequestError, 400),
        (
            error_reply(400, "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."),
            errors.ContextLengthExceededError,
            400,
        ),
        (error_reply(400, "User location is not supported for the API use.", status="FAILED_PRECONDITION"),
         errors.PermissionDeniedError, 400),
        (error_reply(401, "Request had invalid authentication credentials."), errors.AuthenticationError, 401),
        (error_reply(403, "Permission denied on resource project."), errors.PermissionDeniedError, 403),
        (error_reply(404, "models/gemini-9 is not found for API version v1beta"), errors.ModelNotFoundError, 404),
        (error_reply(500, "An internal error has occurred."), errors.ProviderUnavailableError, 500),
        (error_reply(503, "The model is overloaded. Please try again later."), errors.ProviderUnavailableError, 503),
        (error_reply(504, "Deadline expired before operation could complete."), errors.TimeoutError, 504),
        (Reply(status=502, headers={"content-type": "text/html"}, body=[b"<html>Bad Gateway</html>"]),
         errors.ProviderUnavailableError, 502),
    ],
)
async def test_http_errors_map_to_typed_errors(
    upstream: FakeUpstream, gemini: GeminiProvider, reply: Reply, kind: type[errors.ProviderError], status: int
) -> None:
    upstream.handler = lambda r: reply
    with pytest.raises(kind) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert type(caught.value) is kind
    assert caught.value.status == status
    assert (caught.value.provider, caught.value.model) == ("gemini", MODEL)
    with pytest.raises(kind):
        await collect(gemini)


async def test_rate_limit_retry_delay_comes_from_retry_info(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = lambda r: rate_limited("12s")
    with pytest.raises(errors.RateLimitedError) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert caught.value.retry_after == 12.0
    assert caught.value.status == 429
    upstream.handler = lambda r: rate_limited("1.5s")
    _, exc = await collect_until_error(gemini)
    assert isinstance(exc, errors.RateLimitedError) and exc.retry_after == 1.5


async def test_retry_after_header_wins_over_retry_info(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = lambda r: rate_limited("30s", headers={"retry-after": "3"})
    with pytest.raises(errors.RateLimitedError) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert caught.value.retry_after == 3.0


async def test_unavailable_with_retry_info(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = lambda r: error_reply(503, "overloaded", details=[retry_info("2s")])
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert caught.value.retry_after == 2.0


async def test_odd_error_details_do_not_break_mapping(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = lambda r: Reply.json({"error": {"code": 429, "message": "slow down", "details": 5}}, status=429)
    with pytest.raises(errors.RateLimitedError) as caught:
        await gemini.chat(MODEL, req(), LIMITS)
    assert caught.value.retry_after is None and caught.value.provider_message == "slow down"


async def test_vertex_style_list_error_body(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    body = [error_body(400, "bad key", details=[error_info("API_KEY_INVALID")])]
    upstream.handler = lambda r: Reply.json(body, status=400)
    with pytest.raises(errors.AuthenticationError):
        await gemini.chat(MODEL, req(), LIMITS)


# --------------------------------------------------------------------------- streaming

TRICKY = ["Héllo", ",  wörld", "\n\n", "  indented\t", " emoji 👋🏽 ", "日本語", " trailing  "]


@pytest.mark.parametrize("pieces", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("separator", ["\r\n\r\n", "\n\n", "\r\r"])
async def test_stream_split_at_awkward_boundaries_is_byte_exact(
    upstream: FakeUpstream, gemini: GeminiProvider, pieces: int, separator: str
) -> None:
    chunks = [chunk([t], usage_metadata=usage(9, i)) for i, t in enumerate(TRICKY)]
    chunks.append(chunk(finish="STOP", usage_metadata=usage(9, 20, total=29)))
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply(chunks, pieces=pieces, separator=separator))
    events = await collect(gemini)
    assert [e.delta for e in events if e.type == "token"] == TRICKY
    assert [e.type for e in events][-2:] == ["usage", "end"]
    end = events[-1]
    assert end.finish_reason == "stop"
    assert end.response is not None and end.response.text == "".join(TRICKY)
    assert end.usage is not None and (end.usage.prompt_tokens, end.usage.completion_tokens, end.usage.total_tokens) == (
        9, 20, 29,
    )
    assert sum(e.type == "end" for e in events) == 1


async def test_stream_tool_calls_usage_and_end(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    chunks = [
        chunk([text("plan", thought=True)]),
        chunk(["Looking up."]),
        chunk([function_call("lookup", {"q": "x"}), function_call("lookup", {"q": "y"}, id="g1")]),
        chunk([function_call("other", {})], finish="STOP", usage_metadata=usage(50, 10, thoughts=5)),
    ]
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply(chunks))
    events = await collect(gemini)
    assert [e.type for e in events] == ["token", "tool_call", "tool_call", "tool_call", "usage", "end"]
    calls = [e.tool_call for e in events if e.tool_call is not None]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_0", "lookup", {"q": "x"}),
        ("g1", "lookup", {"q": "y"}),
        ("call_2", "other", {}),
    ]
    usage_event = events[-2].usage
    assert usage_event is not None and usage_event.reasoning_tokens == 5 and usage_event.completion_tokens == 15
    end = events[-1]
    assert end.finish_reason == "tool_calls"
    assert end.response is not None and end.response.message.tool_calls == calls


async def test_stream_usage_only_final_chunk_after_finish(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    chunks = [chunk(["a"], finish="MAX_TOKENS"), {"usageMetadata": usage(3, 4), "modelVersion": MODEL}]
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply(chunks))
    events = await collect(gemini)
    assert events[-1].finish_reason == "length"
    assert events[-1].usage is not None and events[-1].usage.total_tokens == 7


async def test_stream_without_finish_reason_is_truncated(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply([chunk(["Hello"]), chunk([" there"])]))
    seen, exc = await collect_until_error(gemini)
    assert [e.delta for e in seen] == ["Hello", " there"]
    assert isinstance(exc, errors.StreamInterruptedError) and exc.kind == "truncated"


async def test_stream_cut_inside_the_finish_event_is_truncated(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    body: list[dict[str, Any] | bytes] = [
        chunk(["Hi"]),
        b'data: {"candidates":[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP"}]}',
    ]
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply(body))
    seen, exc = await collect_until_error(gemini)
    assert [e.delta for e in seen] == ["Hi"]
    assert isinstance(exc, errors.StreamInterruptedError) and exc.kind == "truncated"


async def test_stream_dropped_connection_is_interrupted(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply([chunk(["Hi"])], disconnect=True))
    seen, exc = await collect_until_error(gemini)
    assert [e.delta for e in seen] == ["Hi"]
    assert isinstance(exc, errors.StreamInterruptedError) and exc.kind == "disconnect"


@pytest.mark.parametrize("bad", [b"data: {not json\r\n\r\n", b"data: [1, 2]\r\n\r\n", b'data: "text"\r\n\r\n'])
async def test_stream_malformed_chunk(upstream: FakeUpstream, gemini: GeminiProvider, bad: bytes) -> None:
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply([chunk(["ok"]), bad, chunk(finish="STOP")]))
    seen, exc = await collect_until_error(gemini)
    assert [e.delta for e in seen] == ["ok"]
    assert isinstance(exc, errors.StreamInterruptedError) and exc.kind == "malformed"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (error_body(503, "The model is overloaded."), errors.ProviderUnavailableError),
        (error_body(500, "Internal error"), errors.ProviderUnavailableError),
        (error_body(429, "quota", details=[retry_info("7s")]), errors.RateLimitedError),
        ({"error": {"message": "something broke"}}, errors.StreamInterruptedError),
    ],
)
async def test_error_object_inside_stream(
    upstream: FakeUpstream, gemini: GeminiProvider, error: dict[str, Any], kind: type[errors.ProviderError]
) -> None:
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply([chunk(["partial"]), error, chunk(finish="STOP")]))
    seen, exc = await collect_until_error(gemini)
    assert [e.delta for e in seen] == ["partial"]
    assert type(exc) is kind
    if isinstance(exc, errors.RateLimitedError):
        assert exc.retry_after == 7.0


async def test_stream_safety_stop_after_tokens_is_content_filtered(
    upstream: FakeUpstream, gemini: GeminiProvider
) -> None:
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply([chunk(["Once upon"]), chunk(finish="SAFETY")]))
    seen, exc = await collect_until_error(gemini)
    assert [e.delta for e in seen] == ["Once upon"]
    assert isinstance(exc, errors.ContentFilteredError) and "SAFETY" in str(exc)


async def test_stream_blocked_prompt_is_content_filtered(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    upstream.handler = GeminiFake(api_key=KEY, stream=sse_reply([blocked_prompt("SAFETY")]))
    seen, exc = await collect_until_error(gemini)
    assert seen == []
    assert isinstance(exc, errors.ContentFilteredError)


# --------------------------------------------------------------------------- embeddings


async def test_embeddings_request_shape_and_order(upstream: FakeUpstream, gemini: GeminiProvider) -> None:
    inputs = ["a", "three", "sixteen chars ok"]
    result = await gemini.embed("text-embedding-004", inputs, LIMITS, dimensions=2)
    assert result.vectors == [[1.0, 0.0], [5.0, 1.0], [16.0, 2.0]]
    assert (result.provider, result.model) == ("gemini", "text-embedding-004")
    sent = upstream.requests[-1]
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.json() == {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}, "outputDimensionality": 2}
            for t in inputs
        ]
    }
    await gemini.embed("models/gemini-embedding-001", ["x"], LIMITS)
    assert "outputDimensionality" not in upstream.requests[-1].json()["requests"][0]


@pytest.mark.parametrize("body", [embeddings([[1.0]]), {"embeddings": [{"values": [1.0]}, {}]}, {}])
async def test_embeddings_wrong_shape_is_unavailable(upstream: FakeUpstream, gemini: GeminiProvider, body: Any) -> None:
    upstream.handler = lambda r: Reply.json(body)
    with pytest.raises(errors.ProviderUnavailableError):
        await gemini.embed("text-embedding-004", ["a", "b"], LIMITS)


# --------------------------------------------------------------------------- through the router


async def test_router_chat_and_stream(upstream: FakeUpstream) -> None:
    upstream.handler = GeminiFake(api_key=KEY)
    async with Router(timeout=10.0) as router:
        router.register(GeminiProvider(KEY, upstream.url))
        resp = await router.chat(ChatRequest(model=f"gemini:{MODEL}", messages=[Message.user("ping pong")]))
        assert (resp.provider, resp.model, resp.text) == ("gemini", MODEL, "ping pong")
        assert [a.outcome for a in resp.attempts] == ["ok"]
        streamed = ChatRequest(model=f"gemini:{MODEL}", messages=[Message.user("a b c")])
        events = [e async for e in router.stream(streamed)]
    assert "".join(e.delta for e in events if e.type == "token") == "a b c"
    assert events[-1].type == "end" and events[-1].response is not None
    assert events[-1].response.text == "a b c" and events[-1].response.provider == "gemini"
    assert [r.path.rsplit(":", 1)[1] for r in upstream.requests] == ["generateContent", "streamGenerateContent"]


async def test_router_skips_gemini_without_key(upstream: FakeUpstream) -> None:
    async with Router(timeout=10.0) as router:
        router.register(GeminiProvider(base_url=upstream.url))
        with pytest.raises(errors.AllCandidatesFailedError) as caught:
            await router.chat(ChatRequest(model=f"gemini:{MODEL}", messages=[Message.user("x")]))
    assert caught.value.attempts[0].outcome == "skipped"
    assert upstream.requests == []
