"""The contract between the router and a provider client.

The router only ever sees :class:`Provider`; it never imports a concrete provider module.
A provider translates one wire format and reports failures as :mod:`polyroute.errors`
classes; it makes no routing decisions (no fallbacks, no retries across calls).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from polyroute.types import ChatRequest, ChatResponse, ChatStreamEvent, EmbeddingResponse

__all__ = ["CallLimits", "Capabilities", "Provider"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's wire format can do; drives ``polyroute providers`` and docs."""

    chat: bool = True
    stream: bool = True
    embeddings: bool = False
    tools: bool = False
    vision: bool = False
    json_output: bool = False

    def as_dict(self) -> dict[str, bool]:
        return {
            "chat": self.chat,
            "stream": self.stream,
            "embeddings": self.embeddings,
            "tools": self.tools,
            "vision": self.vision,
            "json_output": self.json_output,
        }


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Transport-level limits the router hands to a provider for one call.

    ``connect`` bounds establishing a connection; ``read`` bounds the wait for any single read
    from the socket. The router itself enforces the total deadline, the time to first token
    and the idle gap between stream events, so providers need not.
    """

    connect: float = 10.0
    read: float | None = 60.0


@runtime_checkable
class Provider(Protocol):
    """A client for one provider (one wire format plus one endpoint and credential)."""

    #: the name used in model references: ``"<name>:<model_id>"``
    name: str
    capabilities: Capabilities

    def missing_config(self) -> str | None:
        """Why this provider cannot be called here (e.g. the env var holding its key), or None."""
        ...

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        """One non-streaming completion; fills message, finish_reason, usage, provider, model."""
        ...

    def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        """Stream ``token``/``tool_call``/``usage`` events and finish with exactly one ``end``.

        Must raise :class:`~polyroute.errors.StreamInterruptedError` instead of returning when
        the upstream stream ends without its finish marker.
        """
        ...

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        """One vector per input, in input order."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
