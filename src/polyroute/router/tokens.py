"""Token counts the router must use before (or without) the provider's own.

Our-side tpm limits are debited before a call is sent, and some calls are billed by their
provider without ever reporting usage to us: a hedge loser closed mid-flight, a stream cut
short before a resume. Both need a number. Four characters a token is the usual rule of
thumb for English text; it is only ever a stand-in, replaced by the provider's count as
soon as one arrives (a finished call settles its tpm debit to the reported total).
"""

from __future__ import annotations

from polyroute.types import ChatRequest, EmbeddingRequest, Usage

__all__ = ["estimated_usage", "prompt_tokens", "text_tokens", "usage_total"]


def prompt_tokens(request: ChatRequest | EmbeddingRequest) -> int:
    """About how many tokens the request's input holds (never 0: every call costs something)."""
    if isinstance(request, EmbeddingRequest):
        return sum(len(t) for t in request.input) // 4 + 1
    return sum(len(m.text) for m in request.messages) // 4 + 1


def text_tokens(text: str, pieces: int = 0) -> int:
    """About how many tokens ``text`` is; at least ``pieces`` (providers stream about a token a chunk)."""
    return max(pieces, -(-len(text) // 4))


def estimated_usage(request: ChatRequest | EmbeddingRequest, text: str = "", pieces: int = 0) -> Usage:
    """What a call that reported nothing was probably billed: its prompt plus the text it sent."""
    prompt = prompt_tokens(request)
    completion = text_tokens(text, pieces)
    return Usage.model_construct(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=0,
        reasoning_tokens=0,
    )


def usage_total(usage: Usage) -> int:
    """The call's total tokens, whether or not the provider filled ``total_tokens`` itself."""
    return usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
