"""Provider clients, one module per wire format.

Imported lazily by name so that ``import polyroute`` does not pay for httpx or for providers
an application never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polyroute.providers.base import CallLimits, Capabilities, Provider

if TYPE_CHECKING:
    from polyroute.providers.gemini import GeminiProvider
    from polyroute.providers.openai import OpenAIProvider

__all__ = ["CallLimits", "Capabilities", "GeminiProvider", "OpenAIProvider", "Provider"]

_LAZY = {
    "OpenAIProvider": "polyroute.providers.openai",
    "GeminiProvider": "polyroute.providers.gemini",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'polyroute.providers' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
