"""The ``x-polyroute-provider`` / ``x-polyroute-attempts`` headers: the routing, readable at a glance.

Every response says who answered and what was tried on the way: replies, streams (with what
was known when the body started) and errors alike, so a client or a proxy log sees a fallback
without parsing the body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["attempts_header", "turn_headers"]


def _attempt_token(attempt: Any) -> str:
    """``provider:model=outcome`` plus why, e.g. ``openai:gpt-4o-mini=error(ProviderUnavailableError 503)``."""
    row: dict[str, Any] = attempt.to_dict() if hasattr(attempt, "to_dict") else attempt  # stored rows are dicts
    why = " ".join(str(x) for x in (row.get("error"), row.get("status")) if x)
    token = f"{row.get('provider')}:{row.get('model')}={row.get('outcome')}" + (f"({why})" if why else "")
    if row.get("retry"):
        token += f"[retry {row['retry']}]"
    if row.get("waitedMs"):
        token += f"[waited {row['waitedMs'] / 1000:.3g}s]"
    # header values must stay printable ASCII whatever a model id contains
    return token.encode("ascii", "replace").decode().replace(",", ";")


def turn_headers(provider: str | None, attempts: Sequence[Any], *, streaming: str | None = None) -> dict[str, str]:
    """Which provider answered, and every candidate tried or skipped on the way (in order).

    A stream's headers leave before it ends: ``streaming`` (``provider:model``) names the
    candidate whose stream the body carries, listed last as ``=streaming``; the final
    ``end`` (or ``error``) event holds the complete attempts.
    """
    return {"x-polyroute-provider": provider or "", "x-polyroute-attempts": attempts_header(attempts, streaming)}


def attempts_header(attempts: Sequence[Any], streaming: str | None = None) -> str:
    """The ``x-polyroute-attempts`` value alone (a failed call has no provider to name)."""
    tokens = [_attempt_token(a) for a in attempts]
    if streaming:
        tokens.append(f"{streaming}=streaming".encode("ascii", "replace").decode().replace(",", ";"))
    return ", ".join(tokens)
