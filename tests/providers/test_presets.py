"""The table of OpenAI-compatible services: URLs, variables, headers, capabilities, and the wire."""

from __future__ import annotations

import pytest

from fakes.openai_server import OpenAIFake
from fakes.upstream import FakeUpstream
from polyroute import EmbeddingRequest, Router, errors
from polyroute.providers.base import CallLimits
from polyroute.providers.openai import OpenAIProvider
from polyroute.providers.presets import PRESETS, preset
from polyroute.types import ChatRequest, Message

LIMITS = CallLimits(connect=5.0, read=10.0)

EXPECTED = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL", True),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY", "GROQ_BASE_URL", True),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", True),
    "together": ("https://api.together.xyz/v1", "TOGETHER_API_KEY", "TOGETHER_BASE_URL", True),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL", True),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY", "MISTRAL_BASE_URL", True),
    "xai": ("https://api.x.ai/v1", "XAI_API_KEY", "XAI_BASE_URL", True),
    "cerebras": ("https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", "CEREBRAS_BASE_URL", True),
    "siliconflow": ("https://api.siliconflow.cn/v1", "SILICONFLOW_API_KEY", "SILICONFLOW_BASE_URL", True),
    "modelscope": ("https://api-inference.modelscope.cn/v1", "MODELSCOPE_API_KEY", "MODELSCOPE_BASE_URL", True),
    "glm4": ("https://open.bigmodel.cn/api/paas/v4", "GLM4_API_KEY", "GLM4_BASE_URL", True),
    "ollama-openai": ("http://localhost:11434/v1", "OLLAMA_OPENAI_API_KEY", "OLLAMA_OPENAI_BASE_URL", False),
    "vllm": ("http://localhost:8000/v1", "VLLM_API_KEY", "VLLM_BASE_URL", False),
    "llamacpp": ("http://localhost:8080/v1", "LLAMACPP_API_KEY", "LLAMACPP_BASE_URL", False),
    "lmstudio": ("http://localhost:1234/v1", "LMSTUDIO_API_KEY", "LMSTUDIO_BASE_URL", False),
}


@pytest.fixture(autouse=True)
def _no_openrouter_attribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_SITE_URL", raising=False)
    monkeypatch.delenv("OPENROUTER_APP_NAME", raising=False)
    monkeypatch.delenv("ZHIPUAI_API_KEY", raising=False)
    monkeypatch.delenv("MODELSCOPE_SDK_TOKEN", raising=False)


def test_table_of_base_urls_and_variables() -> None:
    assert {
        name: (p.base_url, p.api_key_env, p.base_url_env, p.requires_key) for name, p in PRESETS.items()
    } == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_without_environment(name: str) -> None:
    base_url, key_env, _, requires_key = EXPECTED[name]
    provider = preset(name, environ={})
    assert isinstance(provider, OpenAIProvider)
    assert (provider.name, provider.base_url, provider.api_key) == (name, base_url, None)
    assert provider.missing_config() == (key_env if requires_key else None)
    assert provider.capabilities == PRESETS[name].capabilities


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_reads_its_key_and_base_url_variables(name: str) -> None:
    _, key_env, url_env, _ = EXPECTED[name]
    provider = preset(name, environ={key_env: f"key-for-{name}", url_env: "http://127.0.0.1:9/v1/"})
    assert (provider.api_key, provider.base_url, provider.missing_config()) == (
        f"key-for-{name}",
        "http://127.0.0.1:9/v1",
        None,
    )
    explicit = preset(name, api_key="sk-explicit", base_url="http://127.0.0.1:10/v1", environ={key_env: "ignored"})
    assert (explicit.api_key, explicit.base_url) == ("sk-explicit", "http://127.0.0.1:10/v1")


def test_preset_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk-process")
    assert preset("groq").api_key == "gsk-process"
    assert preset("groq", environ={}).api_key is None


@pytest.mark.parametrize(
    ("name", "alternate", "primary"),
    [("glm4", "ZHIPUAI_API_KEY", "GLM4_API_KEY"), ("modelscope", "MODELSCOPE_SDK_TOKEN", "MODELSCOPE_API_KEY")],
)
def test_alternate_key_variables(name: str, alternate: str, primary: str) -> None:
    assert preset(name, environ={alternate: "alt"}).api_key == "alt"
    assert preset(name, environ={alternate: "alt", primary: "main"}).api_key == "main"
    assert preset(name, environ={}).missing_config() == primary


def test_capabilities_are_marked_per_service() -> None:
    caps = {name: p.capabilities for name, p in PRESETS.items()}
    assert all(c.chat and c.stream and c.tools for c in caps.values())
    assert not caps["groq"].embeddings
    assert not caps["cerebras"].embeddings
    assert not caps["deepseek"].embeddings
    assert not caps["deepseek"].vision
    assert caps["openai"].embeddings
    assert caps["mistral"].embeddings
    assert caps["ollama-openai"].embeddings


def test_unknown_preset_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError) as caught:
        preset("nope")
    assert "groq" in str(caught.value)


def test_openai_provider_preset_convenience_and_overrides() -> None:
    provider = OpenAIProvider.preset(
        "groq", api_key="gsk-x", name="fast", max_connections=3, max_tokens_param="max_completion_tokens"
    )
    assert (provider.name, provider.api_key, provider.base_url) == ("fast", "gsk-x", "https://api.groq.com/openai/v1")
    assert provider.max_tokens_param == "max_completion_tokens"


async def test_openrouter_attribution_headers_are_sent(upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream.handler = OpenAIFake(api_key="sk-or-test", prefix="/api/v1")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    monkeypatch.setenv("OPENROUTER_SITE_URL", "https://env.example")
    monkeypatch.setenv("OPENROUTER_APP_NAME", "Env App")
    from_env = preset("openrouter", base_url=f"{upstream.url}/api/v1")
    from_args = preset(
        "openrouter", base_url=f"{upstream.url}/api/v1", site_url="https://args.example", app_name="Args"
    )
    await from_env.chat("openai/gpt-4o-mini", ChatRequest(model="openrouter:x", messages=[Message.user("hi")]), LIMITS)
    events = [
        e
        async for e in from_args.stream(
            "openai/gpt-4o-mini", ChatRequest(model="x:y", messages=[Message.user("hi")]), LIMITS
        )
    ]
    await from_env.aclose()
    await from_args.aclose()
    assert events[-1].type == "end"
    first, second = upstream.requests
    assert first.path == second.path == "/api/v1/chat/completions"
    assert (first.headers["http-referer"], first.headers["x-title"]) == ("https://env.example", "Env App")
    assert (second.headers["http-referer"], second.headers["x-title"]) == ("https://args.example", "Args")
    assert first.headers["authorization"] == "Bearer sk-or-test"


def test_openrouter_without_attribution_sends_no_empty_headers() -> None:
    headers = preset("openrouter", api_key="k", environ={}).client.headers
    assert "http-referer" not in headers
    assert "x-title" not in headers


def test_header_options_are_only_for_presets_that_declare_them() -> None:
    with pytest.raises(TypeError):
        preset("groq", site_url="https://x.example")


async def test_mistral_streams_without_stream_options(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake(api_key="m-key")
    provider = preset("mistral", api_key="m-key", base_url=f"{upstream.url}/v1")
    request = ChatRequest(model="mistral:mistral-small-latest", messages=[Message.user("hi")])
    events = [e async for e in provider.stream("mistral-small-latest", request, LIMITS)]
    await provider.aclose()
    assert events[-1].type == "end"
    body = upstream.requests[-1].json()
    assert body["stream"] is True
    assert "stream_options" not in body


async def test_local_server_preset_is_keyless_but_sends_a_key_when_set(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake(api_key=None)
    request = ChatRequest(model="vllm:qwen", messages=[Message.user("hi")])
    keyless = preset("vllm", environ={"VLLM_BASE_URL": f"{upstream.url}/v1"})
    keyed = preset("vllm", environ={"VLLM_BASE_URL": f"{upstream.url}/v1", "VLLM_API_KEY": "token-abc"})
    assert (await keyless.chat("qwen", request, LIMITS)).text == "Hello from the fake."
    await keyed.chat("qwen", request, LIMITS)
    await keyless.aclose()
    await keyed.aclose()
    assert "authorization" not in upstream.requests[0].headers
    assert upstream.requests[1].headers["authorization"] == "Bearer token-abc"


async def test_router_skips_embeddings_on_a_preset_without_them(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake(api_key=None)
    async with Router(timeout=10.0) as router:
        router.register(preset("groq", api_key="gsk", base_url=f"{upstream.url}/v1"))
        router.register(preset("ollama-openai", base_url=f"{upstream.url}/v1"))
        response = await router.embed(
            EmbeddingRequest(model="groq:llama", fallbacks=["ollama-openai:nomic-embed-text"], input=["a", "b"])
        )
    assert (response.provider, len(response.vectors)) == ("ollama-openai", 2)
    assert [(a.provider, a.outcome) for a in response.attempts] == [("groq", "skipped"), ("ollama-openai", "ok")]
    assert [r.path for r in upstream.requests] == ["/v1/embeddings"]
