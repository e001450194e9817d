"""Provider clients, one module per wire format.

Imported lazily by name so that ``import polyroute`` does not pay for httpx2 or for providers
an application never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from polyroute.providers.base import CallLimits, Capabilities, Provider

if TYPE_CHECKING:
    from polyroute.providers.anthropic import AnthropicProvider
    from polyroute.providers.azure import AzureOpenAIProvider
    from polyroute.providers.bedrock import BedrockProvider
    from polyroute.providers.cohere import CohereProvider
    from polyroute.providers.gemini import GeminiProvider
    from polyroute.providers.local import LocalProvider
    from polyroute.providers.ollama import OllamaProvider
    from polyroute.providers.openai import OpenAIProvider
    from polyroute.providers.presets import preset
    from polyroute.providers.vertex import VertexGeminiProvider

__all__ = [
    "AnthropicProvider",
    "AzureOpenAIProvider",
    "BedrockProvider",
    "CallLimits",
    "Capabilities",
    "CohereProvider",
    "GeminiProvider",
    "LocalProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "Provider",
    "VertexGeminiProvider",
    "preset",
]

_LAZY = {
    "AnthropicProvider": "polyroute.providers.anthropic",
    "AzureOpenAIProvider": "polyroute.providers.azure",
    "BedrockProvider": "polyroute.providers.bedrock",
    "CohereProvider": "polyroute.providers.cohere",
    "GeminiProvider": "polyroute.providers.gemini",
    "LocalProvider": "polyroute.providers.local",
    "OllamaProvider": "polyroute.providers.ollama",
    "OpenAIProvider": "polyroute.providers.openai",
    "VertexGeminiProvider": "polyroute.providers.vertex",
    "preset": "polyroute.providers.presets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'polyroute.providers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
