"""The stream fault matrix over real wire formats: fault x wire x before/after the first token.

Each case puts a real provider client (OpenAI, Gemini, Anthropic) in front of a local fake
upstream speaking that provider's SSE format with one injected fault, and a scripted
fallback behind it. Before the first token the router must fall back silently (the attempt
records the fault); after it, the caller must get an ``error`` event and the exception, and
the fallback must not be called. ``docs/resilience.md`` tabulates the same matrix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakes import anthropic_server as an
from fakes import gemini_server as gm
from fakes import openai_server as oa
from fakes.scripted import ScriptedProvider
from fakes.upstream import FakeUpstream, Pause, Recorded, Reply
from polyroute import ChatRequest, Message, RetryPolicy, Router, errors
from polyroute.providers.anthropic import AnthropicProvider
from polyroute.providers.base import Provider
from polyroute.providers.gemini import GeminiProvider
from polyroute.providers.openai import OpenAIProvider
from polyroute.types import ChatStreamEvent

TOKENS = ["Hel", "lo", " there"]


@dataclass
class Wire:
    """How one wire format spells a stream: its opening, token events, ending, and faults."""

    name: str
    make: Callable[[str], Provider]
    head: Callable[[], list[str]]  # events before any token
    token: Callable[[str], str]
    tail: Callable[[], list[str]]  # finish events (finish reason, usage, [DONE] / message_stop)
    error_event: Callable[[], str]
    http_error: Callable[[], Reply]
    rate_limited: Callable[[], Reply]
    malformed: str = "data: {not json\n\n"


def _oa_tail() -> list[str]:
    return [oa.sse(oa.chunk({}, finish_reason="stop")), oa.sse(oa.usage_chunk()), oa.sse("[DONE]")]


def _gm_token(text: str) -> str:
    return gm.sse_body([gm.chunk([text])]).decode()


def _an_head() -> list[str]:
    start = {"type": "content_block_start", "index": 0, "content_block": an.text_block("")}
    return [an.message_start(), an.event("content_block_start", start)]


def _an_token(text: str) -> str:
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return an.event("content_block_delta", delta)


def _an_tail() -> list[str]:
    stop = an.event("content_block_stop", {"type": "content_block_stop", "index": 0})
    return [stop, an.message_delta(), an.message_stop()]


WIRES = [
    Wire(
        "openai",
        lambda url: OpenAIProvider(api_key="sk-test", base_url=url + "/v1"),
        lambda: [oa.sse(oa.chunk({"role": "assistant", "content": ""}))],
        lambda t: oa.sse(oa.chunk({"content": t})),
        _oa_tail,
        lambda: oa.sse({"error": {"message": "The server had an error", "type": "server_error"}}),
        lambda: oa.error_reply(500, "The server had an error", "server_error"),
        lambda: oa.rate_limited(headers={"retry-after": "1"}),
    ),
    Wire(
        "gemini",
        lambda url: GeminiProvider(api_key="g-test", base_url=url),
        lambda: [],
        _gm_token,
        lambda: [gm.sse_body([gm.chunk([], finish="STOP", usage_metadata=gm.usage(3, 3))]).decode()],
        lambda: gm.sse_body([gm.error_body(503, "The model is overloaded.")]).decode(),
        lambda: gm.error_reply(500, "Internal error encountered."),
        lambda: gm.rate_limited("1s"),
    ),
    Wire(
        "anthropic",
        lambda url: AnthropicProvider(api_key="a-test", base_url=url),
        _an_head,
        _an_token,
        _an_tail,
        an.error_event,
        lambda: an.error_reply(500, "api_error", "Internal server error"),
        lambda: an.error_reply(429, "rate_limit_error", "Rate limited", headers={"retry-after": "1"}),
    ),
]


def tokens(wire: Wire, n: int) -> list[str]:
    return [wire.token(t) for t in TOKENS[:n]]


# fault name -> (the upstream's reply, the error class the attempt must record)
Fault = Callable[[Wire], Reply]
BEFORE: dict[str, tuple[Fault, type[errors.PolyrouteError]]] = {
    "HTTP 500": (lambda w: w.http_error(), errors.ProviderUnavailableError),
    "HTTP 429 + Retry-After": (lambda w: w.rate_limited(), errors.RateLimitedError),
    "disconnect": (lambda w: Reply.sse(w.head(), disconnect=True), errors.StreamInterruptedError),
    "truncated": (lambda w: Reply.sse(w.head()), errors.StreamInterruptedError),
    "malformed chunk": (lambda w: Reply.sse([*w.head(), w.malformed]), errors.StreamInterruptedError),
    "error event inside the stream": (lambda w: Reply.sse([*w.head(), w.error_event()]), errors.ProviderError),
    "slow first token": (lambda w: Reply.sse([Pause(3.0), *w.head(), *tokens(w, 3), *w.tail()]), errors.TimeoutError),
}
AFTER: dict[str, tuple[Fault, type[errors.PolyrouteError]]] = {
    "disconnect": (lambda w: Reply.sse([*w.head(), *tokens(w, 2)], disconnect=True), errors.StreamInterruptedError),
    "truncated": (lambda w: Reply.sse([*w.head(), *tokens(w, 2)]), errors.StreamInterruptedError),
    "malformed chunk": (lambda w: Reply.sse([*w.head(), *tokens(w, 2), w.malformed]), errors.StreamInterruptedError),
    "error event inside the stream": (
        lambda w: Reply.sse([*w.head(), *tokens(w, 2), w.error_event()]),
        errors.ProviderError,
    ),
    "stall mid-stream": (lambda w: Reply.sse([*w.head(), *tokens(w, 2), Pause(3.0), *w.tail()]), errors.TimeoutError),
}


def ask() -> ChatRequest:
    return ChatRequest(model="up:m", fallbacks=["b:m"], messages=[Message.user("hi")])


async def stream_through(wire: Wire, reply: Callable[[], Reply]) -> tuple[list[ChatStreamEvent], Any, ScriptedProvider]:
    """Stream one request via ``wire``'s client (upstream answering ``reply``) with fallback ``b``.

    Returns the events, the exception (or None) and the fallback provider.
    """
    seen: list[ChatStreamEvent] = []
    with FakeUpstream(lambda r: reply()) as up:
        router = Router(timeout=10, first_token_timeout=1.5, idle_timeout=1.5)
        router.register(wire.make(up.url), name="up")
        fallback = ScriptedProvider("b")
        router.register(fallback)
        async with router:
            try:
                async for event in router.stream(ask()):
                    seen.append(event)
            except errors.PolyrouteError as exc:
                return seen, exc, fallback
    return seen, None, fallback


@pytest.mark.parametrize("wire", WIRES, ids=[w.name for w in WIRES])
async def test_clean_stream_passes_through(wire: Wire) -> None:
    seen, exc, fallback = await stream_through(wire, lambda: Reply.sse([*wire.head(), *tokens(wire, 3), *wire.tail()]))
    assert exc is None, exc
    assert "".join(e.delta for e in seen) == "".join(TOKENS) and seen[-1].type == "end"
    assert fallback.calls == []


@pytest.mark.parametrize("fault", list(BEFORE), ids=list(BEFORE))
@pytest.mark.parametrize("wire", WIRES, ids=[w.name for w in WIRES])
async def test_fault_before_the_first_token_falls_back(wire: Wire, fault: str) -> None:
    build, expected = BEFORE[fault]
    seen, exc, fallback = await stream_through(wire, lambda: build(wire))
    assert exc is None, exc
    assert {e.provider for e in seen} == {"b"} and seen[-1].response is not None
    first = seen[-1].response.attempts[0]
    assert (first.provider, first.outcome) == ("up", "error")
    assert issubclass(getattr(errors, first.error or ""), expected), first
    assert len(fallback.calls) == 1


@pytest.mark.parametrize("fault", list(AFTER), ids=list(AFTER))
@pytest.mark.parametrize("wire", WIRES, ids=[w.name for w in WIRES])
async def test_fault_after_the_first_token_is_an_error_event_then_the_exception(wire: Wire, fault: str) -> None:
    build, expected = AFTER[fault]
    seen, exc, fallback = await stream_through(wire, lambda: build(wire))
    assert isinstance(exc, expected), exc
    assert [e.type for e in seen] == ["token", "token", "error"]
    assert "".join(e.delta for e in seen) == "".join(TOKENS[:2])
    assert seen[-1].error is exc and fallback.calls == []
    assert [(a.provider, a.outcome) for a in exc.attempts] == [("up", "error")]


async def test_429_retry_after_is_waited_when_retries_are_allowed() -> None:
    ok = Reply.sse([*WIRES[0].head(), *tokens(WIRES[0], 3), *_oa_tail()])
    replies = iter([oa.rate_limited(headers={"retry-after": "0.3"}), ok])

    def handler(request: Recorded) -> Reply:
        return next(replies)

    with FakeUpstream(handler) as up:
        router = Router(timeout=10, retry=RetryPolicy(max_retries=1, backoff_base=0.001))
        router.register(WIRES[0].make(up.url), name="up")
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with router:
            seen = [e async for e in router.stream(ChatRequest(model="up:m", messages=[Message.user("hi")]))]
        assert loop.time() - start >= 0.3
    end = seen[-1].response
    assert end is not None and end.attempts[-1].retry == 1 and end.attempts[-1].waited >= 0.3
    assert len(up.requests) == 2


def test_the_docs_table_lists_every_fault_tested_here() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "resilience.md").read_text()
    section = doc[doc.index("## The fault matrix over the wire formats") :]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")]
    for fault in {*BEFORE, *AFTER}:
        assert any(row.startswith(fault) for row in rows), fault
