"""polyroute: many LLM providers behind one API.

Application code needs only what is exported here: the request and response types, the
:class:`Router`, and the error classes. Provider clients live in :mod:`polyroute.providers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polyroute import errors
from polyroute.router import RetryPolicy, Router
from polyroute.types import (
    Attempt,
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelRef,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from polyroute.providers.gemini import GeminiProvider
    from polyroute.providers.openai import OpenAIProvider

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "ChatRequest",
    "ChatResponse",
    "ChatStreamEvent",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "GeminiProvider",
    "ImagePart",
    "Message",
    "ModelRef",
    "OpenAIProvider",
    "ResponseFormat",
    "RetryPolicy",
    "Router",
    "TextPart",
    "Tool",
    "ToolCall",
    "Usage",
    "errors",
]


def __getattr__(name: str) -> Any:
    if name in ("OpenAIProvider", "GeminiProvider"):
        from polyroute import providers

        return getattr(providers, name)
    raise AttributeError(f"module 'polyroute' has no attribute {name!r}")
