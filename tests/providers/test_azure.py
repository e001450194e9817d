"""AzureOpenAIProvider against a local server that speaks Azure OpenAI's wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from fakes.azure_server import AzureFake, content_filter_error, filter_results, prompt_filter_chunk
from fakes.openai_server import (
    chunk,
    completion,
    error_reply,
    every_byte,
    rate_limited,
    sse,
    stream_events,
    stream_reply,
    tool_call,
    tool_call_chunks,
)
from fakes.upstream import FakeUpstream, Reply
from polyroute import errors
from polyroute.providers.azure import DEFAULT_API_VERSION, AzureOpenAIProvider, filtered_categories
from polyroute.providers.base import CallLimits
from polyroute.types import ChatRequest, Message, ResponseFormat, Tool

KEY = "azure-key-0123456789"
DEPLOYMENT = "gpt4o-prod"
LIMITS = CallLimits(connect=5.0, read=10.0)


def req(text: str = "hi", **kw: Any) -> ChatRequest:
    return ChatRequest(model=f"azure:{DEPLOYMENT}", messages=[Message.user(text)], **kw)


@pytest.fixture
async def azure(upstream: FakeUpstream) -> AsyncIterator[AzureOpenAIProvider]:
    upstream.handler = AzureFake(KEY)
    provider = AzureOpenAIProvider(api_key=KEY, endpoint=upstream.url)
    yield provider
    await provider.aclose()


async def scripted(upstream: FakeUpstream, *replies: Reply, **kw: Any) -> AzureOpenAIProvider:
    upstream.handler = AzureFake(KEY, script=replies)
    return AzureOpenAIProvider(api_key=KEY, endpoint=upstream.url, **kw)


# --------------------------------------------------------------------------- URL, auth, config


async def test_chat_goes_to_the_deployment_url_with_api_version_and_api_key(
    upstream: FakeUpstream, azure: AzureOpenAIProvider
) -> None:
    reply = await azure.chat(DEPLOYMENT, req("hello", temperature=0.3), LIMITS)
    assert reply.text == "Hello from the fake."
    assert (reply.provider, reply.model) == ("azure", DEPLOYMENT)
    sent = upstream.requests[0]
    assert sent.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert sent.query == f"api-version={DEFAULT_API_VERSION}"
    assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers
    assert sent.json()["messages"] == [{"role": "user", "content": "hello"}]
    assert sent.json()["temperature"] == 0.3


async def test_entra_id_token_is_sent_as_bearer(upstream: FakeUpstream) -> None:
    upstream.handler = AzureFake(None, token="eyJ-entra-token")
    provider = AzureOpenAIProvider(api_key="", endpoint=upstream.url, azure_ad_token="eyJ-entra-token")
    assert provider.missing_config() is None
    await provider.chat(DEPLOYMENT, req(), LIMITS)
    await provider.aclose()
    assert upstream.requests[0].headers["authorization"] == "Bearer eyJ-entra-token"
    assert "api-key" not in upstream.requests[0].headers


def test_from_env_and_missing_config(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/"}
    provider = AzureOpenAIProvider.from_env(environ={**env, "OPENAI_API_VERSION": "2025-01-01-preview"})
    assert (provider.api_key, provider.base_url, provider.api_version) == (
        "k",
        "https://res.openai.azure.com",
        "2025-01-01-preview",
    )
    assert (
        AzureOpenAIProvider.from_env(environ={"AZURE_OPENAI_API_KEY": "k"}).missing_config() == "AZURE_OPENAI_ENDPOINT"
    )
    assert AzureOpenAIProvider.from_env(environ={"AZURE_OPENAI_ENDPOINT": "https://x"}).missing_config() == (
        "AZURE_OPENAI_API_KEY"
    )
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "from-env")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://env.openai.azure.com")
    from_process = AzureOpenAIProvider()
    assert (from_process.api_key, from_process.endpoint, from_process.api_version) == (
        "from-env",
        "https://env.openai.azure.com",
        DEFAULT_API_VERSION,
    )


async def test_not_configured_sends_nothing(upstream: FakeUpstream) -> None:
    provider = AzureOpenAIProvider(api_key=KEY, endpoint="")
    with pytest.raises(errors.NotConfiguredError) as caught:
        await provider.chat(DEPLOYMENT, req(), LIMITS)
    assert caught.value.env_var == "AZURE_OPENAI_ENDPOINT"


async def test_custom_api_version_and_bad_deployment_name(upstream: FakeUpstream) -> None:
    upstream.handler = AzureFake(KEY, api_version="2025-04-01-preview")
    provider = AzureOpenAIProvider(api_key=KEY, endpoint=upstream.url, api_version="2025-04-01-preview")
    await provider.chat(DEPLOYMENT, req(), LIMITS)
    assert upstream.requests[0].query == "api-version=2025-04-01-preview"
    with pytest.raises(errors.ModelNotFoundError):
        await provider.chat("../../other", req(), LIMITS)
    with pytest.raises(errors.ModelNotFoundError):
        await provider.chat("not-deployed", req(), LIMITS)
    await provider.aclose()


async def test_wrong_key_is_an_authentication_error_that_never_shows_the_key(upstream: FakeUpstream) -> None:
    upstream.handler = AzureFake("the-right-key")
    provider = AzureOpenAIProvider(api_key=KEY, endpoint=upstream.url)
    with pytest.raises(errors.AuthenticationError) as caught:
        await provider.chat(DEPLOYMENT, req(), LIMITS)
    await provider.aclose()
    assert KEY not in str(caught.value) and KEY not in str(caught.value.details())


async def test_rate_limit_reads_retry_after(upstream: FakeUpstream) -> None:
    provider = await scripted(upstream, rate_limited({"retry-after": "4", "retry-after-ms": "3500"}))
    with pytest.raises(errors.RateLimitedError) as caught:
        await provider.chat(DEPLOYMENT, req(), LIMITS)
    await provider.aclose()
    assert caught.value.retry_after == 4.0


# --------------------------------------------------------------------------- content filters


async def test_filtered_prompt_is_content_filtered_naming_the_category(upstream: FakeUpstream) -> None:
    provider = await scripted(upstream, content_filter_error("violence", "jailbreak"))
    with pytest.raises(errors.ContentFilteredError) as caught:
        await provider.chat(DEPLOYMENT, req(), LIMITS)
    await provider.aclose()
    assert caught.value.status == 400
    assert "violence, jailbreak" in caught.value.message
    assert "content management policy" in (caught.value.provider_message or "")


def test_filtered_categories_reads_only_real_verdicts() -> None:
    assert filtered_categories(b"not json") == []
    assert filtered_categories(orjson.dumps({"error": {"innererror": {"content_filter_result": "x"}}})) == []
    body = {"error": {"innererror": {"content_filter_result": filter_results(["hate"])}}}
    assert filtered_categories(orjson.dumps(body)) == ["hate"]


async def test_filtered_reply_without_output_raises(upstream: FakeUpstream) -> None:
    data = completion(None, finish_reason="content_filter")
    data["choices"][0]["content_filter_results"] = filter_results(["sexual"])
    provider = await scripted(upstream, Reply.json(data))
    with pytest.raises(errors.ContentFilteredError):
        await provider.chat(DEPLOYMENT, req(), LIMITS)
    await provider.aclose()


async def test_partly_filtered_reply_keeps_text_and_says_content_filter(upstream: FakeUpstream) -> None:
    provider = await scripted(upstream, Reply.json(completion("Part of an answer", finish_reason="content_filter")))
    reply = await provider.chat(DEPLOYMENT, req(), LIMITS)
    await provider.aclose()
    assert (reply.text, reply.finish_reason) == ("Part of an answer", "content_filter")


async def test_stream_filtered_before_any_output_raises(upstream: FakeUpstream) -> None:
    events = [prompt_filter_chunk(), sse(chunk({}, finish_reason="content_filter")), sse("[DONE]")]
    provider = await scripted(upstream, stream_reply(events))
    with pytest.raises(errors.ContentFilteredError):
        async for _ in provider.stream(DEPLOYMENT, req(), LIMITS):
            pass
    await provider.aclose()


async def test_in_stream_content_filter_error_event_is_typed(upstream: FakeUpstream) -> None:
    error = {"error": {"message": "filtered", "code": "content_filter", "status": 400}}
    provider = await scripted(upstream, stream_reply([prompt_filter_chunk(), sse(chunk({"content": "a"})), sse(error)]))
    with pytest.raises(errors.ContentFilteredError):
        async for _ in provider.stream(DEPLOYMENT, req(), LIMITS):
            pass
    await provider.aclose()


# --------------------------------------------------------------------------- streaming


async def test_stream_skips_the_prompt_filter_chunk_even_split_byte_by_byte(upstream: FakeUpstream) -> None:
    body = [prompt_filter_chunk(), *stream_events(("Hel", "lo"))]
    provider = await scripted(upstream, stream_reply(every_byte(body, gap=None)))
    events = [e async for e in provider.stream(DEPLOYMENT, req(), LIMITS)]
    await provider.aclose()
    assert [e.delta for e in events if e.type == "token"] == ["Hel", "lo"]
    assert events[-1].type == "end" and events[-1].finish_reason == "stop"
    assert events[-1].response is not None and events[-1].response.id == "chatcmpl-fake0001"
    assert upstream.requests[0].json()["stream_options"] == {"include_usage": True}


async def test_stream_default_fake_and_tool_calls(upstream: FakeUpstream) -> None:
    calls = tool_call_chunks(0, "call_abc", "lookup", ['{"q"', ': "x"}'])
    provider = await scripted(upstream, stream_reply([prompt_filter_chunk(), *stream_events((), tool_calls=calls)]))
    events = [e async for e in provider.stream(DEPLOYMENT, req(), LIMITS)]
    await provider.aclose()
    tool = [e.tool_call for e in events if e.type == "tool_call"]
    assert tool[0] is not None and (tool[0].id, tool[0].name, tool[0].arguments) == ("call_abc", "lookup", {"q": "x"})
    assert events[-1].finish_reason == "tool_calls"


async def test_tools_and_json_schema_use_openai_body(upstream: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    reply_data = completion(None, tool_calls=[tool_call("call_1", "f", {"a": 1})])
    provider = await scripted(upstream, Reply.json(reply_data))
    request = req(
        tools=[Tool(name="f", parameters=schema)],
        response_format=ResponseFormat(type="json_schema", json_schema=schema),
    )
    reply = await provider.chat(DEPLOYMENT, request, LIMITS)
    await provider.aclose()
    body = upstream.requests[0].json()
    assert body["tools"][0]["function"]["name"] == "f"
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert reply.message.tool_calls is not None and reply.message.tool_calls[0].arguments == {"a": 1}


# --------------------------------------------------------------------------- embeddings and errors


async def test_embeddings_use_the_deployment_url(upstream: FakeUpstream, azure: AzureOpenAIProvider) -> None:
    result = await azure.embed("embed-small", ["a", "b"], LIMITS, dimensions=4)
    assert len(result.vectors) == 2 and len(result.vectors[0]) == 4
    assert upstream.requests[0].path == "/openai/deployments/embed-small/embeddings"


async def test_server_error_is_unavailable(upstream: FakeUpstream) -> None:
    provider = await scripted(upstream, error_reply(500, "The server had an error", "server_error"))
    with pytest.raises(errors.ProviderUnavailableError):
        await provider.chat(DEPLOYMENT, req(), LIMITS)
    await provider.aclose()
