"""The stream fault matrix over real wire formats: fault x wire x before/after the first token.

Each case puts a real provider client (OpenAI, Gemini, Anthropic) in front of a local fake
upstream speaking that provider's wire format with one injected fault, and a scripted
fallback behind it. :data:`CASES` is the single source: the tests below iterate it, and
``scripts/gen_fault_table.py`` renders it into ``docs/resilience.md``, so the documented
behaviour is exactly the tested behaviour (``test_docs_fault_table_is_up_to_date`` fails
when the two drift apart).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

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

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ["Hel", "lo", " there"]
#: the router's first-token and idle timeouts in every case (long enough for a loaded CI box)
TIMEOUT = 1.5
#: a gap that must trip those timeouts (2x), and one that must not (well under)
OVER = 2 * TIMEOUT
UNDER = 0.6
#: the Retry-After every wire's 429 carries, in seconds
RETRY_AFTER = 1


@dataclass
class Wire:
    """How one wire format spells a stream and its errors."""

    name: str
    make: Callable[[str], Provider]
    head: Callable[[], list[str]]  # events before any token
    token: Callable[[str], str]
    tail: Callable[[], list[str]]  # finish events (finish reason, usage, [DONE] / message_stop)
    error_event: Callable[[], str]
    http_500: Callable[[], Reply]
    overloaded: Callable[[], Reply]
    unauthorized: Callable[[], Reply]
    bad_request: Callable[[], Reply]
    rate_limited: Callable[[], Reply]
    malformed: str = "data: {not json\n\n"

    def tokens(self, n: int = len(TOKENS)) -> list[str]:
        return [self.token(t) for t in TOKENS[:n]]

    def clean(self) -> list[str]:
        return [*self.head(), *self.tokens(), *self.tail()]


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
        lambda: oa.error_reply(503, "The engine is currently overloaded, please try again later", "server_error"),
        oa.invalid_api_key,
        lambda: oa.error_reply(400, "Invalid value for 'temperature'.", param="temperature"),
        lambda: oa.rate_limited(headers={"retry-after": str(RETRY_AFTER)}),
    ),
    Wire(
        "gemini",
        lambda url: GeminiProvider(api_key="g-test", base_url=url),
        lambda: [],
        _gm_token,
        lambda: [gm.sse_body([gm.chunk([], finish="STOP", usage_metadata=gm.usage(3, 3))]).decode()],
        lambda: gm.sse_body([gm.error_body(503, "The model is overloaded.")]).decode(),
        lambda: gm.error_reply(500, "Internal error encountered."),
        lambda: gm.error_reply(503, "The model is overloaded. Please try again later."),
        gm.api_key_invalid,
        lambda: gm.error_reply(400, "Invalid value at 'generation_config.temperature'."),
        lambda: gm.rate_limited(f"{RETRY_AFTER}s"),
    ),
    Wire(
        "anthropic",
        lambda url: AnthropicProvider(api_key="a-test", base_url=url),
        _an_head,
        _an_token,
        _an_tail,
        an.error_event,
        lambda: an.error_reply(500, "api_error", "Internal server error"),
        lambda: an.error_reply(529, "overloaded_error", "Overloaded"),
        lambda: an.error_reply(401, "authentication_error", "invalid x-api-key"),
        lambda: an.error_reply(400, "invalid_request_error", "temperature: range: 0..1"),
        lambda: an.error_reply(
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
            {"retry-after": str(RETRY_AFTER)},
        ),
    ),
]
WIRE_IDS = [w.name for w in WIRES]

Phase = Literal["before", "after"]
#: what the caller sees:
#: ``falls back``: the fallback answers, the attempt records the error;
#: ``error after tokens``: two tokens, an ``error`` event, then the exception; no fallback;
#: ``fails``: the exception at once, no fallback (the request itself is wrong);
#: ``retries``: with retries on, the same candidate again after at least Retry-After;
#: ``passes``: every token and ``end``, from the first candidate.
Outcome = Literal["falls back", "error after tokens", "fails", "retries", "passes"]
Build = Callable[[Wire], "Reply | list[Reply]"]


@dataclass(frozen=True)
class Case:
    """One row of the matrix: a fault injected at one phase, and what every wire must do."""

    fault: str
    phase: Phase
    build: Build
    outcome: Outcome
    #: the error class the attempt (or the exception) carries, exactly; ``None`` for ``passes``
    error: type[errors.PolyrouteError] | None = None
    #: a different class for some wires
    per_wire: dict[str, type[errors.PolyrouteError]] = field(default_factory=dict)

    def error_for(self, wire: str) -> type[errors.PolyrouteError] | None:
        return self.per_wire.get(wire, self.error)

    @property
    def id(self) -> str:
        return f"{self.fault} ({self.phase})"


def _trickle(w: Wire, gap: float) -> list[str | Pause]:
    """Every token after the first arriving ``gap`` seconds after the one before."""
    events: list[str | Pause] = [*w.head(), w.token(TOKENS[0])]
    for t in TOKENS[1:]:
        events += [Pause(gap), w.token(t)]
    return [*events, *w.tail()]


def _after2(w: Wire, *rest: str | Pause) -> list[str | Pause]:
    return [*w.head(), *w.tokens(2), *rest]


Unavailable, Interrupted, Timeout = errors.ProviderUnavailableError, errors.StreamInterruptedError, errors.TimeoutError
CASES: list[Case] = [
    Case("HTTP 500, provider error body", "before", lambda w: w.http_500(), "falls back", Unavailable),
    Case("overloaded: HTTP 503 (Anthropic 529)", "before", lambda w: w.overloaded(), "falls back", Unavailable),
    Case(
        "bad API key: HTTP 401 (Gemini 400 API_KEY_INVALID)",
        "before",
        lambda w: w.unauthorized(),
        "falls back",
        errors.AuthenticationError,
    ),
    Case("HTTP 400 invalid request", "before", lambda w: w.bad_request(), "fails", errors.BadRequestError),
    Case("HTTP 429 + Retry-After", "before", lambda w: w.rate_limited(), "falls back", errors.RateLimitedError),
    Case(
        "HTTP 429 + Retry-After, retries on",
        "before",
        lambda w: [w.rate_limited(), Reply.sse(w.clean())],
        "retries",
        errors.RateLimitedError,
    ),
    Case("slow first token", "before", lambda w: Reply.sse([Pause(OVER), *w.clean()]), "falls back", Timeout),
    Case("disconnect", "before", lambda w: Reply.sse(w.head(), disconnect=True), "falls back", Interrupted),
    Case("disconnect", "after", lambda w: Reply.sse(_after2(w), disconnect=True), "error after tokens", Interrupted),
    Case("truncated (no final event)", "before", lambda w: Reply.sse(w.head()), "falls back", Interrupted),
    Case("truncated (no final event)", "after", lambda w: Reply.sse(_after2(w)), "error after tokens", Interrupted),
    Case("malformed chunk", "before", lambda w: Reply.sse([*w.head(), w.malformed]), "falls back", Interrupted),
    Case("malformed chunk", "after", lambda w: Reply.sse(_after2(w, w.malformed)), "error after tokens", Interrupted),
    Case(
        "error event inside the stream",
        "before",
        lambda w: Reply.sse([*w.head(), w.error_event()]),
        "falls back",
        Unavailable,
    ),
    Case(
        "error event inside the stream",
        "after",
        lambda w: Reply.sse(_after2(w, w.error_event())),
        "error after tokens",
        Unavailable,
    ),
    Case("stall mid-stream", "after", lambda w: Reply.sse(_after2(w, Pause(2 * OVER))), "error after tokens", Timeout),
    Case(
        "slow trickle, gaps over the idle timeout",
        "after",
        lambda w: Reply.sse(_after2(w, Pause(OVER), w.token(TOKENS[2]), Pause(OVER), *w.tail())),
        "error after tokens",
        Timeout,
    ),
    Case(
        "slow trickle, gaps under the timeouts",
        "before",
        lambda w: Reply.sse([Pause(UNDER), *_trickle(w, UNDER)]),
        "passes",
    ),
    Case("slow trickle, gaps under the timeouts", "after", lambda w: Reply.sse(_trickle(w, UNDER)), "passes"),
]


def ask() -> ChatRequest:
    return ChatRequest(model="up:m", fallbacks=["b:m"], messages=[Message.user("hi")])


@dataclass
class Run:
    events: list[ChatStreamEvent]
    exc: errors.PolyrouteError | None
    fallback: ScriptedProvider
    upstream_requests: int


async def stream_through(wire: Wire, replies: Reply | Sequence[Reply], *, retries: int = 0) -> Run:
    """Stream one request via ``wire``'s client, the upstream answering ``replies`` in turn, fallback ``b``."""
    queue = [replies] if isinstance(replies, Reply) else list(replies)

    def handler(request: Recorded) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    seen: list[ChatStreamEvent] = []
    caught: errors.PolyrouteError | None = None
    retry = RetryPolicy(max_retries=retries, backoff_base=0.001)
    with FakeUpstream(handler) as up:
        router = Router(timeout=15, first_token_timeout=TIMEOUT, idle_timeout=TIMEOUT, retry=retry)
        router.register(wire.make(up.url), name="up")
        fallback = ScriptedProvider("b")
        router.register(fallback)
        async with router:
            try:
                async for event in router.stream(ask()):
                    seen.append(event)
            except errors.PolyrouteError as exc:
                caught = exc
        count = len(up.requests)
    return Run(seen, caught, fallback, count)


def _reply(run: Run) -> Any:
    assert run.exc is None, run.exc
    end = run.events[-1]
    assert end.type == "end" and end.response is not None
    return end.response


async def check_case(case: Case, wire: Wire) -> None:
    """Run ``case`` on ``wire`` and assert its outcome (shared by every row of the matrix)."""
    expected = case.error_for(wire.name)
    run = await stream_through(wire, case.build(wire), retries=1 if case.outcome == "retries" else 0)
    if case.outcome == "passes":
        reply = _reply(run)
        assert "".join(e.delta for e in run.events) == "".join(TOKENS) and reply.provider == "up"
        assert run.fallback.calls == []
    elif case.outcome == "falls back":
        reply = _reply(run)
        assert {e.provider for e in run.events} == {"b"} and len(run.fallback.calls) == 1
        first = reply.attempts[0]
        assert (first.provider, first.outcome, first.error) == ("up", "error", expected and expected.__name__)
    elif case.outcome == "retries":
        reply = _reply(run)
        assert reply.provider == "up" and run.fallback.calls == [] and run.upstream_requests == 2
        first, second = reply.attempts
        assert (first.outcome, first.error) == ("error", expected and expected.__name__)
        assert second.retry == 1 and second.waited >= RETRY_AFTER
    elif case.outcome == "fails":
        assert type(run.exc) is expected, run.exc
        assert run.events == [] and run.fallback.calls == []
    else:
        assert type(run.exc) is expected, run.exc
        assert [e.type for e in run.events] == ["token", "token", "error"]
        assert "".join(e.delta for e in run.events) == "".join(TOKENS[:2])
        assert run.events[-1].error is run.exc and run.fallback.calls == []
        assert [(a.provider, a.outcome) for a in run.exc.attempts] == [("up", "error")]


@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_clean_stream_passes_through(wire: Wire) -> None:
    run = await stream_through(wire, Reply.sse(wire.clean()))
    reply = _reply(run)
    assert "".join(e.delta for e in run.events) == "".join(TOKENS) and reply.provider == "up"
    assert run.fallback.calls == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_fault_matrix(wire: Wire, case: Case) -> None:
    await check_case(case, wire)


def test_every_documented_fault_is_covered_for_every_wire_in_the_phases_it_can_happen() -> None:
    phases: dict[str, set[str]] = {}
    for case in CASES:
        phases.setdefault(case.fault, set()).add(case.phase)
    streaming = ["disconnect", "truncated", "malformed chunk", "error event inside the stream", "slow trickle"]
    for name in streaming:
        assert any(f.startswith(name) and p == {"before", "after"} for f, p in phases.items()), name
    assert len({c.id for c in CASES}) == len(CASES)


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_fault_table", ROOT / "scripts" / "gen_fault_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_fault_table_is_up_to_date() -> None:
    """Fails when the matrix changed and ``python scripts/gen_fault_table.py`` was not rerun."""
    gen = generator()
    doc = (ROOT / "docs" / "resilience.md").read_text(encoding="utf-8")
    assert gen.render(CASES, WIRE_IDS) in doc
    assert gen.main(["--check"]) == 0


def test_generator_check_fails_on_drift_and_rewrites_only_the_table(tmp_path: Path) -> None:
    gen = generator()
    doc = tmp_path / "r.md"
    doc.write_text(f"# intro\n\n{gen.START}\n| stale |\n{gen.END}\n\nafter\n", encoding="utf-8")
    assert gen.main(["--check", "--output", str(doc)]) == 1
    assert gen.main(["--output", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# intro\n\n") and text.endswith("\n\nafter\n") and "| stale |" not in text
    assert gen.render(CASES, WIRE_IDS) in text
    assert gen.main(["--check", "--output", str(doc)]) == 0
    doc.write_text("no markers here\n", encoding="utf-8")
    assert gen.main(["--output", str(doc)]) == 2
