"""Known OpenAI-compatible services, by name.

Each :class:`Preset` records what differs between services that all speak the OpenAI wire
format: the default base URL (with its version segment, as the OpenAI SDK expects), which
environment variables hold the key and override the base URL, extra headers, and what the
service can do. Variables follow ``<NAME>_API_KEY`` / ``<NAME>_BASE_URL``; where a service's
own SDK documents another name it is accepted too (``ZHIPUAI_API_KEY`` for glm4,
``MODELSCOPE_SDK_TOKEN`` for modelscope). Local servers (ollama, vllm, llamacpp, lmstudio)
need no key, but send one if its variable is set (for servers started with ``--api-key``).

Capabilities say what the service's API offers, not what every model on it does: a vLLM
server only embeds when it serves an embedding model. Where a service is not known to offer
something it is marked False.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from polyroute.errors import ConfigError
from polyroute.providers.base import Capabilities
from polyroute.providers.openai import OpenAIProvider

__all__ = ["PRESETS", "HeaderFromEnv", "Preset", "preset"]


@dataclass(frozen=True, slots=True)
class HeaderFromEnv:
    """A header whose value comes from a constructor option or, failing that, a variable."""

    header: str
    env: str
    option: str


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    base_url: str
    #: variables that may hold the key, in order of preference; the first is reported when missing
    api_key_envs: tuple[str, ...]
    base_url_env: str
    capabilities: Capabilities
    requires_key: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    header_envs: tuple[HeaderFromEnv, ...] = ()
    #: False for services that reject ``stream_options`` (they send usage unasked)
    stream_usage: bool = True
    docs: str = ""

    @property
    def api_key_env(self) -> str:
        return self.api_key_envs[0]

    def build(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> OpenAIProvider:
        """An :class:`OpenAIProvider` for this service; arguments win over the environment."""
        env = os.environ if environ is None else environ
        if api_key is None:
            api_key = next((env[k] for k in self.api_key_envs if env.get(k)), "")
        extra = dict(self.headers)
        for spec in self.header_envs:
            value = options.pop(spec.option, None) or env.get(spec.env)
            if value:
                extra[spec.header] = value
        extra.update(headers or {})
        options.setdefault("capabilities", self.capabilities)
        options.setdefault("stream_usage", self.stream_usage)
        return OpenAIProvider(
            api_key=api_key,
            base_url=base_url or env.get(self.base_url_env) or self.base_url,
            name=name or self.name,
            headers=extra,
            api_key_env=self.api_key_env,
            require_key=self.requires_key,
            base_url_env=None,
            **options,
        )


def _caps(*, embeddings: bool, vision: bool, tools: bool = True, json_output: bool = True) -> Capabilities:
    return Capabilities(
        chat=True, stream=True, embeddings=embeddings, tools=tools, vision=vision, json_output=json_output
    )


def _hosted(name: str, base_url: str, capabilities: Capabilities, *more_keys: str, **kw: Any) -> Preset:
    """A preset whose variables follow ``<NAME>_API_KEY`` / ``<NAME>_BASE_URL``."""
    prefix = name.upper().replace("-", "_")
    return Preset(name, base_url, (f"{prefix}_API_KEY", *more_keys), f"{prefix}_BASE_URL", capabilities, **kw)


def _local(name: str, base_url: str, docs: str) -> Preset:
    return _hosted(name, base_url, _caps(embeddings=True, vision=True), requires_key=False, docs=docs)


_ALL = (
    _hosted(
        "openai",
        "https://api.openai.com/v1",
        _caps(embeddings=True, vision=True),
        docs="https://platform.openai.com/docs/api-reference/chat",
    ),
    _hosted(
        "groq",
        "https://api.groq.com/openai/v1",
        _caps(embeddings=False, vision=True),
        docs="https://console.groq.com/docs/openai",
    ),
    _hosted(
        "openrouter",
        "https://openrouter.ai/api/v1",
        _caps(embeddings=True, vision=True),
        header_envs=(
            HeaderFromEnv("HTTP-Referer", "OPENROUTER_SITE_URL", "site_url"),
            HeaderFromEnv("X-Title", "OPENROUTER_APP_NAME", "app_name"),
        ),
        docs="https://openrouter.ai/docs/features/app-attribution",
    ),
    _hosted("together", "https://api.together.xyz/v1", _caps(embeddings=True, vision=True)),
    _hosted(
        "deepseek",
        "https://api.deepseek.com/v1",
        _caps(embeddings=False, vision=False),
        docs="https://api-docs.deepseek.com/",
    ),
    _hosted(
        "mistral",
        "https://api.mistral.ai/v1",
        _caps(embeddings=True, vision=True),
        stream_usage=False,  # 422 "extra inputs are not permitted"; usage comes in the last chunk anyway
        docs="https://docs.mistral.ai/api/",
    ),
    _hosted("xai", "https://api.x.ai/v1", _caps(embeddings=False, vision=True), docs="https://docs.x.ai/"),
    _hosted(
        "cerebras",
        "https://api.cerebras.ai/v1",
        _caps(embeddings=False, vision=False),
        docs="https://inference-docs.cerebras.ai/",
    ),
    _hosted(
        "siliconflow",
        "https://api.siliconflow.cn/v1",
        _caps(embeddings=True, vision=True),
        docs="https://docs.siliconflow.cn/docs/userguide/quickstart",
    ),
    _hosted(
        "modelscope",
        "https://api-inference.modelscope.cn/v1",
        _caps(embeddings=False, vision=True, json_output=False),
        "MODELSCOPE_SDK_TOKEN",
        docs="https://www.modelscope.cn/docs/model-service/API-Inference/intro",
    ),
    _hosted(
        "glm4",
        "https://open.bigmodel.cn/api/paas/v4",
        _caps(embeddings=True, vision=True),
        "ZHIPUAI_API_KEY",
        docs="https://open.bigmodel.cn/dev/api",
    ),
    # "ollama" is the native /api/chat provider (providers/ollama.py); this is Ollama's /v1 surface
    _local("ollama-openai", "http://localhost:11434/v1", "https://github.com/ollama/ollama/blob/main/docs/openai.md"),
    _local("vllm", "http://localhost:8000/v1", "https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html"),
    _local("llamacpp", "http://localhost:8080/v1", "https://github.com/ggml-org/llama.cpp/tree/master/tools/server"),
    _local("lmstudio", "http://localhost:1234/v1", "https://lmstudio.ai/docs/app/api/endpoints/openai"),
)

#: every known service, by name
PRESETS: Mapping[str, Preset] = {p.name: p for p in _ALL}


def preset(name: str, /, **overrides: Any) -> OpenAIProvider:
    """An :class:`OpenAIProvider` for the named service, configured from the environment.

    ``overrides`` are :meth:`Preset.build` arguments (``api_key``, ``base_url``, ``name``,
    ``headers``, ``environ``, header options such as openrouter's ``site_url``/``app_name``)
    or :class:`OpenAIProvider` options (``max_connections``, ``max_tokens_param``, ...).
    """
    spec = PRESETS.get(name)
    if spec is None:
        raise ConfigError(f"unknown OpenAI-compatible preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return spec.build(**overrides)
