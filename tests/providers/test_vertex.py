"""VertexGeminiProvider against a local server that speaks Vertex AI's Gemini wire format."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakes.gemini_server import chunk, error_reply, function_call, rate_limited, response, sse_reply, usage
from fakes.upstream import FakeUpstream, Reply
from fakes.vertex_server import VertexFake
from polyroute import errors
from polyroute.providers.base import CallLimits
from polyroute.providers.vertex import TokenSource, VertexGeminiProvider, vertex_base_url
from polyroute.types import ChatRequest, Message, ResponseFormat, Tool

PROJECT = "demo-project"
LOCATION = "us-central1"
TOKEN = "ya29.test-token"
MODEL = "gemini-2.0-flash"
LIMITS = CallLimits(connect=5.0, read=10.0)
PREFIX = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{MODEL}"


def req(text: str = "hello vertex", **kw: object) -> ChatRequest:
    return ChatRequest(model=f"vertex:{MODEL}", messages=[Message.user(text)], **kw)  # type: ignore[arg-type]


@pytest.fixture
async def vertex(upstream: FakeUpstream) -> AsyncIterator[VertexGeminiProvider]:
    upstream.handler = VertexFake(project=PROJECT, location=LOCATION, tokens=(TOKEN,))
    provider = VertexGeminiProvider(PROJECT, LOCATION, access_token=TOKEN, base_url=upstream.url)
    yield provider
    await provider.aclose()


def token_script(tmp_path: Path, *tokens: str) -> list[str]:
    """A command printing ``tokens[n]`` on its n-th run (the last one thereafter); runs are counted in a file."""
    counter = tmp_path / "runs"
    code = (
        "import pathlib,sys\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        f"tokens = {list(tokens)!r}\n"
        "print(tokens[min(n, len(tokens) - 1)])\n"
    )
    return [sys.executable, "-c", code]


def runs(tmp_path: Path) -> int:
    counter = tmp_path / "runs"
    return int(counter.read_text()) if counter.exists() else 0


# --------------------------------------------------------------------------- URL and config


def test_base_url_is_regional_except_for_global() -> None:
    assert vertex_base_url("europe-west4") == "https://europe-west4-aiplatform.googleapis.com"
    assert vertex_base_url("global") == "https://aiplatform.googleapis.com"
    provider = VertexGeminiProvider("p", "global", access_token="t")
    assert provider.base_url == "https://aiplatform.googleapis.com/v1"
    assert provider._resource(MODEL) == f"projects/p/locations/global/publishers/google/models/{MODEL}"


def test_from_env_reads_vertex_and_google_cloud_variables() -> None:
    env = {"GOOGLE_CLOUD_PROJECT": "gp", "GOOGLE_CLOUD_LOCATION": "asia-northeast1", "VERTEX_ACCESS_TOKEN": "tok"}
    provider = VertexGeminiProvider.from_env(environ=env)
    assert (provider.project, provider.location, provider.missing_config()) == ("gp", "asia-northeast1", None)
    env = {**env, "VERTEX_PROJECT": "vp", "VERTEX_LOCATION": "us-east5", "VERTEX_BASE_URL": "http://127.0.0.1:9"}
    provider = VertexGeminiProvider.from_env(environ=env)
    assert (provider.project, provider.location, provider.base_url) == ("vp", "us-east5", "http://127.0.0.1:9/v1")


def test_missing_project_or_credential_is_reported() -> None:
    assert VertexGeminiProvider(None, access_token="t").missing_config() == "VERTEX_PROJECT"
    assert VertexGeminiProvider("p").missing_config() == "VERTEX_ACCESS_TOKEN"
    assert VertexGeminiProvider("p", token_command="gcloud auth print-access-token").missing_config() is None
    with pytest.raises(errors.ConfigError):
        VertexGeminiProvider("p", "us-central1/../x", access_token="t")


async def test_not_configured_raises_typed_error_without_a_request(upstream: FakeUpstream) -> None:
    provider = VertexGeminiProvider(PROJECT, LOCATION, base_url=upstream.url)
    with pytest.raises(errors.NotConfiguredError) as caught:
        await provider.chat(MODEL, req(), LIMITS)
    assert caught.value.env_var == "VERTEX_ACCESS_TOKEN"
    assert upstream.requests == []


async def test_model_id_with_path_characters_is_refused(vertex: VertexGeminiProvider) -> None:
    with pytest.raises(errors.ModelNotFoundError):
        await vertex.chat("../../other/models/x", req(), LIMITS)


# --------------------------------------------------------------------------- chat and stream


async def test_chat_posts_gemini_body_to_project_path_with_bearer(
    upstream: FakeUpstream, vertex: VertexGeminiProvider
) -> None:
    reply = await vertex.chat(MODEL, req("say hi", temperature=0.2), LIMITS)
    assert reply.text == "say hi"
    assert (reply.provider, reply.model, reply.finish_reason) == ("vertex", MODEL, "stop")
    sent = upstream.requests[0]
    assert sent.path == f"{PREFIX}:generateContent"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert "x-goog-api-key" not in sent.headers
    body = sent.json()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "say hi"}]}]
    assert body["generationConfig"] == {"temperature": 0.2}


async def test_json_schema_and_tools_use_the_gemini_mapping(
    upstream: FakeUpstream, vertex: VertexGeminiProvider
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": ["string", "null"]}}, "required": ["city"]}
    tool = Tool(name="weather", parameters=schema)
    await vertex.chat(
        MODEL, req(tools=[tool], response_format=ResponseFormat(type="json_schema", json_schema=schema)), LIMITS
    )
    body = upstream.requests[0].json()
    converted = {"type": "OBJECT", "properties": {"city": {"type": "STRING", "nullable": True}}, "required": ["city"]}
    assert body["generationConfig"]["responseSchema"] == converted
    assert body["tools"][0]["functionDeclarations"][0]["parameters"] == converted


async def test_stream_uses_alt_sse_and_assembles_tool_calls(upstream: FakeUpstream) -> None:
    chunks = [
        chunk(["Checking"]),
        chunk([function_call("weather", {"city": "Paris"})]),
        chunk(finish="STOP", usage_metadata=usage(10, 4)),
    ]
    upstream.handler = VertexFake(stream=sse_reply(chunks, pieces=7))
    provider = VertexGeminiProvider(PROJECT, LOCATION, access_token=TOKEN, base_url=upstream.url)
    try:
        events = [e async for e in provider.stream(MODEL, req(), LIMITS)]
    finally:
        await provider.aclose()
    assert upstream.requests[0].path == f"{PREFIX}:streamGenerateContent"
    assert upstream.requests[0].query == "alt=sse"
    assert [e.type for e in events] == ["token", "tool_call", "usage", "end"]
    call = events[1].tool_call
    assert call is not None and (call.name, call.arguments) == ("weather", {"city": "Paris"})
    assert events[-1].finish_reason == "tool_calls"
    assert events[-1].usage is not None and events[-1].usage.prompt_tokens == 10


async def test_truncated_stream_raises(upstream: FakeUpstream) -> None:
    upstream.handler = VertexFake(stream=sse_reply([chunk(["partial"])]))
    provider = VertexGeminiProvider(PROJECT, LOCATION, access_token=TOKEN, base_url=upstream.url)
    with pytest.raises(errors.StreamInterruptedError):
        async for _ in provider.stream(MODEL, req(), LIMITS):
            pass
    await provider.aclose()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (rate_limited("7s"), errors.RateLimitedError),
        (error_reply(403, "Permission 'aiplatform.endpoints.predict' denied"), errors.PermissionDeniedError),
        (error_reply(404, "Publisher Model was not found"), errors.ModelNotFoundError),
        (error_reply(503, "The service is currently unavailable."), errors.ProviderUnavailableError),
        (
            error_reply(400, "The input token count exceeds the maximum number of tokens allowed"),
            errors.ContextLengthExceededError,
        ),
    ],
)
async def test_google_rpc_errors_map_to_typed_errors(
    upstream: FakeUpstream, reply: Reply, expected: type[errors.ProviderError]
) -> None:
    upstream.handler = VertexFake(generate=reply)
    provider = VertexGeminiProvider(PROJECT, LOCATION, access_token=TOKEN, base_url=upstream.url)
    with pytest.raises(expected) as caught:
        await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    assert caught.value.provider == "vertex"
    if isinstance(caught.value, errors.RateLimitedError):
        assert caught.value.retry_after == 7.0


async def test_rejected_token_is_an_authentication_error_without_the_token(upstream: FakeUpstream) -> None:
    upstream.handler = VertexFake(tokens=("the-good-one",))
    provider = VertexGeminiProvider(PROJECT, LOCATION, access_token="ya29.secret-bad", base_url=upstream.url)
    with pytest.raises(errors.AuthenticationError) as caught:
        await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    assert caught.value.status == 401
    assert "ya29.secret-bad" not in str(caught.value) and "ya29.secret-bad" not in str(caught.value.details())


# --------------------------------------------------------------------------- token command


async def test_token_command_runs_once_and_is_cached(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.handler = VertexFake(tokens=("tok-1",))
    provider = VertexGeminiProvider(
        PROJECT, LOCATION, token_command=token_script(tmp_path, "tok-1"), base_url=upstream.url
    )
    try:
        await provider.chat(MODEL, req(), LIMITS)
        await provider.chat(MODEL, req(), LIMITS)
    finally:
        await provider.aclose()
    assert runs(tmp_path) == 1
    assert [r.headers["authorization"] for r in upstream.requests] == ["Bearer tok-1", "Bearer tok-1"]


async def test_token_is_refetched_after_a_401(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.handler = VertexFake(tokens=("tok-2",))
    provider = VertexGeminiProvider(
        PROJECT, LOCATION, token_command=token_script(tmp_path, "tok-1", "tok-2"), base_url=upstream.url
    )
    try:
        with pytest.raises(errors.AuthenticationError):
            await provider.chat(MODEL, req(), LIMITS)
        reply = await provider.chat(MODEL, req("again"), LIMITS)
    finally:
        await provider.aclose()
    assert reply.text == "again"
    assert runs(tmp_path) == 2


async def test_token_cache_expires() -> None:
    source = TokenSource(
        command=[sys.executable, "-c", "import time; print(f'tok-{time.monotonic_ns()}')"], lifetime=0.0
    )
    assert await source.get() != await source.get()


async def test_failing_token_command_is_a_typed_error_naming_the_cause(upstream: FakeUpstream) -> None:
    upstream.handler = VertexFake()
    command = [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('You do not currently have an active account'); sys.exit(1)",
    ]
    provider = VertexGeminiProvider(PROJECT, LOCATION, token_command=command, base_url=upstream.url)
    with pytest.raises(errors.AuthenticationError) as caught:
        await provider.chat(MODEL, req(), LIMITS)
    assert "active account" in (caught.value.provider_message or "")
    assert (caught.value.provider, caught.value.model) == ("vertex", MODEL)
    missing = VertexGeminiProvider(PROJECT, LOCATION, token_command="no-such-gcloud-binary x", base_url=upstream.url)
    with pytest.raises(errors.AuthenticationError, match="no-such-gcloud-binary"):
        await missing.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    await missing.aclose()
    assert upstream.requests == []


# --------------------------------------------------------------------------- embeddings


async def test_embeddings_use_predict(upstream: FakeUpstream, vertex: VertexGeminiProvider) -> None:
    result = await vertex.embed("text-embedding-005", ["one two", "three"], LIMITS, dimensions=2)
    assert result.vectors == [[7.0, 0.0], [5.0, 1.0]]
    assert result.usage.prompt_tokens == 3
    sent = upstream.requests[0]
    assert sent.path.endswith("/publishers/google/models/text-embedding-005:predict")
    assert sent.json() == {
        "instances": [{"content": "one two"}, {"content": "three"}],
        "parameters": {"outputDimensionality": 2},
    }


async def test_embeddings_count_mismatch_is_typed(upstream: FakeUpstream) -> None:
    upstream.handler = VertexFake(predict={"predictions": [{"embeddings": {"values": [1.0]}}]})
    provider = VertexGeminiProvider(PROJECT, LOCATION, access_token=TOKEN, base_url=upstream.url)
    with pytest.raises(errors.ProviderUnavailableError):
        await provider.embed("text-embedding-005", ["a", "b"], LIMITS)
    await provider.aclose()


async def test_whole_reply_round_trip(upstream: FakeUpstream) -> None:
    upstream.handler = VertexFake(generate=response(["ok"], usage_metadata=usage(3, 1, cached=2)))
    provider = VertexGeminiProvider(PROJECT, LOCATION, access_token=TOKEN, base_url=upstream.url)
    reply = await provider.chat(MODEL, req(), LIMITS)
    await provider.aclose()
    assert (reply.text, reply.usage.prompt_tokens, reply.usage.cached_tokens) == ("ok", 3, 2)
