"""The fault matrix over real wire formats: fault x wire x phase, streamed, resumed and plain.

Each case puts a real provider client (OpenAI, Gemini, Anthropic) in front of a local fake
upstream speaking that provider's wire format with one injected fault, and a scripted
fallback ``b`` behind it. :data:`CASES` is the single source: ``tests/router/test_faults_wire.py``
(streams), ``test_faults_wire_resume.py`` (streams with ``resume`` on) and
``test_faults_wire_chat.py`` (plain calls) iterate it, and ``scripts/gen_fault_table.py``
renders it into ``docs/resilience.md``, so the documented behaviour is exactly the tested
behaviour (``test_docs_fault_table_is_up_to_date`` fails when the two drift apart).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fakes.scripted import ScriptedProvider, Step
from fakes.upstream import FakeUpstream, Pause, Recorded, Reply
from fakes.wires import RETRY_AFTER, TOKENS, WIRE_IDS, WIRES, Wire
from polyroute import ChatRequest, Message, RetryPolicy, Router, errors
from polyroute.providers.base import CallLimits
from polyroute.router.policy import RoutingPolicy
from polyroute.types import Attempt, ChatResponse, ChatStreamEvent

__all__ = [
    "CASES", "FALLBACK_TOKENS", "LINGER", "OVER", "RETRY_AFTER", "TIMEOUT", "TOKENS", "UNDER", "WIRES", "WIRE_IDS",
    "Case", "Late", "Plain", "Run", "TimedFallback", "Wire", "ask", "describe", "rows", "run_through", "until_closed",
]

#: the router's first-token and idle timeouts for streams, and the per-candidate timeout
#: (``provider_timeout``) for plain calls (long enough for a loaded CI box)
TIMEOUT = 1.5
#: a gap that must trip those timeouts (2x), and one that must not (well under)
OVER = 2 * TIMEOUT
UNDER = 0.6
#: what the scripted fallback ``b`` answers
FALLBACK_TOKENS = Step().tokens
#: two seconds is as long as a case waits for the upstream to see its connection closed
LINGER = 2.0


@dataclass(frozen=True)
class Late:
    """A reply whose status line is sent only after ``seconds`` (an upstream still thinking)."""

    seconds: float
    reply: Reply


Phase = Literal["before", "after"]
#: what the caller sees:
#: ``falls back``: the fallback answers, the attempt records the error;
#: ``error after tokens``: two tokens, an ``error`` event, then the exception; no fallback;
#: ``fails``: the exception at once, no fallback (the request itself is wrong);
#: ``retries``: with retries on, the same candidate again after at least Retry-After;
#: ``passes``: every token and ``end`` (plain: the answer), from the first candidate;
#: ``resumes``: two tokens, then the fallback continues the reply, then ``end``.
Outcome = Literal["falls back", "error after tokens", "fails", "retries", "passes", "resumes"]
Build = Callable[[Wire], "Reply | Late | list[Reply | Late]"]
PolyrouteErrorType = type[errors.PolyrouteError]


@dataclass(frozen=True)
class Plain:
    """The row's fault on a plain call (``router.chat``): how it is injected there, and the outcome."""

    #: how the fault looks on a plain call, when that differs from the row's name
    what: str
    build: Build
    outcome: Outcome
    error: PolyrouteErrorType | None = None
    #: ``RetryPolicy(max_retries=...)`` for the run
    retries: int = 0


@dataclass(frozen=True)
class Case:
    """One row of the matrix: a fault injected at one phase, and what every wire must do."""

    fault: str
    phase: Phase
    build: Build
    outcome: Outcome
    #: the error class the attempt (or the exception) carries, exactly; ``None`` for ``passes``
    error: PolyrouteErrorType | None = None
    #: a different class for some wires
    per_wire: dict[str, PolyrouteErrorType] = field(default_factory=dict)
    #: ``RetryPolicy(max_retries=...)`` for the run (faults that are never retried run with retries on)
    retries: int = 0
    #: "after" rows: the outcome with ``RoutingPolicy(resume=True)`` on the chain
    resume: Outcome | None = None
    #: the same fault on a plain call; at most one case of each fault carries it
    plain: Plain | None = None

    def error_for(self, wire: str) -> PolyrouteErrorType | None:
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


def _not_json(w: Wire) -> Reply:
    return Reply(200, {"content-type": "application/json"}, [b"<html><body>502 Bad Gateway</body></html>"])


Unavailable, Interrupted, Timeout = errors.ProviderUnavailableError, errors.StreamInterruptedError, errors.TimeoutError
Auth, BadRequest, RateLimited = errors.AuthenticationError, errors.BadRequestError, errors.RateLimitedError
CASES: list[Case] = [
    Case(
        "HTTP 500, provider error body", "before", lambda w: w.http_500(), "falls back", Unavailable,
        plain=Plain("", lambda w: w.http_500(), "falls back", Unavailable),
    ),
    Case(
        "overloaded: HTTP 503 (Anthropic 529)", "before", lambda w: w.overloaded(), "falls back", Unavailable,
        plain=Plain("", lambda w: w.overloaded(), "falls back", Unavailable),
    ),
    Case(
        "bad API key: HTTP 401 (Gemini 400 API_KEY_INVALID)", "before", lambda w: w.unauthorized(), "falls back",
        Auth, retries=2, plain=Plain("", lambda w: w.unauthorized(), "falls back", Auth, retries=2),
    ),
    Case(
        "HTTP 400 invalid request", "before", lambda w: w.bad_request(), "fails", BadRequest, retries=2,
        plain=Plain("", lambda w: w.bad_request(), "fails", BadRequest, retries=2),
    ),
    Case(
        "HTTP 429 + Retry-After", "before", lambda w: w.rate_limited(), "falls back", RateLimited,
        plain=Plain("", lambda w: w.rate_limited(), "falls back", RateLimited),
    ),
    Case(
        "HTTP 429 + Retry-After, retries on", "before", lambda w: [w.rate_limited(), Reply.sse(w.clean())],
        "retries", RateLimited, retries=1,
        plain=Plain("", lambda w: [w.rate_limited(), w.answer()], "retries", RateLimited, retries=1),
    ),
    Case(
        "slow first token", "before", lambda w: Reply.sse([Pause(OVER), *w.clean()]), "falls back", Timeout,
        plain=Plain(
            f"the answer {OVER:g} s late (candidate timeout {TIMEOUT:g} s)",
            lambda w: Late(OVER, w.answer()), "falls back", Timeout,
        ),
    ),
    Case(
        "disconnect", "before", lambda w: Reply.sse(w.head(), disconnect=True), "falls back", Interrupted,
        plain=Plain("connection dropped mid-body", lambda w: w.cut_answer(disconnect=True), "falls back", Unavailable),
    ),
    Case(
        "disconnect", "after", lambda w: Reply.sse(_after2(w), disconnect=True), "error after tokens", Interrupted,
        resume="resumes",
    ),
    Case(
        "truncated (no final event)", "before", lambda w: Reply.sse(w.head()), "falls back", Interrupted,
        plain=Plain("200 whose JSON holds no answer", lambda w: w.no_answer(), "falls back", Unavailable),
    ),
    Case(
        "truncated (no final event)", "after", lambda w: Reply.sse(_after2(w)), "error after tokens", Interrupted,
        resume="resumes",
    ),
    Case(
        "malformed chunk", "before", lambda w: Reply.sse([*w.head(), w.malformed]), "falls back", Interrupted,
        plain=Plain("200 whose body is not JSON", _not_json, "falls back", Unavailable),
    ),
    Case(
        "malformed chunk", "after", lambda w: Reply.sse(_after2(w, w.malformed)), "error after tokens", Interrupted,
        resume="resumes",
    ),
    Case(
        "error event inside the stream", "before", lambda w: Reply.sse([*w.head(), w.error_event()]),
        "falls back", Unavailable,
        plain=Plain("200 whose body is an error object", lambda w: w.error_in_body(), "falls back", Unavailable),
    ),
    Case(
        "error event inside the stream", "after", lambda w: Reply.sse(_after2(w, w.error_event())),
        "error after tokens", Unavailable, resume="resumes",
    ),
    Case(
        "stall mid-stream", "after", lambda w: Reply.sse(_after2(w, Pause(2 * OVER))), "error after tokens", Timeout,
        resume="resumes",
        plain=Plain(
            "the body stalls half-way past the candidate timeout",
            lambda w: w.cut_answer(Pause(2 * OVER)), "falls back", Timeout,
        ),
    ),
    Case(
        "slow trickle, gaps over the idle timeout", "after",
        lambda w: Reply.sse(_after2(w, Pause(OVER), w.token(TOKENS[2]), Pause(OVER), *w.tail())),
        "error after tokens", Timeout, resume="resumes",
    ),
    Case(
        "slow trickle, gaps under the timeouts", "before", lambda w: Reply.sse([Pause(UNDER), *_trickle(w, UNDER)]),
        "passes",
        plain=Plain(f"the answer {UNDER:g} s late, within the timeout", lambda w: Late(UNDER, w.answer()), "passes"),
    ),
    Case(
        "slow trickle, gaps under the timeouts", "after", lambda w: Reply.sse(_trickle(w, UNDER)), "passes",
        resume="passes",
    ),
]


class TimedFallback(ScriptedProvider):
    """The scripted fallback ``b``, noting when each call reached it."""

    def __init__(self, name: str = "b") -> None:
        super().__init__(name)
        self.started: list[float] = []

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        self.started.append(time.monotonic())
        return await super().chat(model, request, limits)

    def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        self.started.append(time.monotonic())
        return super().stream(model, request, limits)


@dataclass
class Run:
    """What one case did: the caller's view, with times, and the upstream's."""

    started: float
    events: list[ChatStreamEvent]  # streams: every event the caller got ...
    times: list[float]  # ... and when (time.monotonic())
    reply: ChatResponse | None  # plain calls: the answer
    exc: errors.PolyrouteError | None
    fallback: TimedFallback
    requests: list[Recorded]
    arrivals: list[float]  # when each upstream request reached the handler

    @property
    def end(self) -> ChatResponse:
        """The successful answer (the stream's ``end`` response, or the plain reply)."""
        assert self.exc is None, self.exc
        if self.reply is not None:
            return self.reply
        last = self.events[-1]
        assert last.type == "end" and last.response is not None, last
        return last.response

    @property
    def attempts(self) -> list[Attempt]:
        return self.exc.attempts if self.exc is not None else self.end.attempts


def rows(attempts: Sequence[Attempt]) -> list[tuple[str, str, str | None]]:
    return [(a.provider, a.outcome, a.error) for a in attempts]


def ask(model: str = "up:m") -> ChatRequest:
    fallbacks = ["b:m"] if model == "up:m" else []
    return ChatRequest(model=model, fallbacks=fallbacks, messages=[Message.user("hi")])


async def until_closed(requests: Sequence[Recorded], within: float) -> None:
    """Wait (at most ``within`` s) until the upstream has seen every request's connection closed."""
    give_up = time.monotonic() + within
    while any(r.closed_at is None for r in requests) and time.monotonic() < give_up:
        await asyncio.sleep(0.01)


async def run_through(
    wire: Wire,
    replies: Reply | Late | Sequence[Reply | Late],
    *,
    streaming: bool = True,
    retries: int = 0,
    resume: bool = False,
    backoff: float = 0.001,
    rng: random.Random | None = None,
    linger: bool = False,
) -> Run:
    """One request via ``wire``'s client, the upstream answering ``replies`` in turn (the last repeats).

    Streams run with the first-token and idle timeouts at :data:`TIMEOUT`; plain calls with a
    per-candidate timeout of :data:`TIMEOUT` and no stream timeouts. ``resume`` names an alias
    ``chain`` = up, b with ``RoutingPolicy(resume=True)`` instead of up with fallback b.
    ``linger`` waits, before the router is closed, until the upstream saw the connections close
    (so a connection the router forgot to close is visible as ``closed_at is None``).
    """
    queue: list[Reply | Late] = [replies] if isinstance(replies, Reply | Late) else list(replies)
    arrivals: list[float] = []

    async def handler(request: Recorded) -> Reply:
        arrivals.append(time.monotonic())
        step = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(step, Late):
            await asyncio.sleep(step.seconds)
            return step.reply
        return step

    retry = RetryPolicy(max_retries=retries, backoff_base=backoff)
    if streaming:
        router = Router(timeout=15, first_token_timeout=TIMEOUT, idle_timeout=TIMEOUT, retry=retry, rng=rng)
    else:
        router = Router(timeout=15, provider_timeout=TIMEOUT, retry=retry, rng=rng)
    events: list[ChatStreamEvent] = []
    times: list[float] = []
    reply: ChatResponse | None = None
    caught: errors.PolyrouteError | None = None
    with FakeUpstream(handler) as up:
        router.register(wire.make(up.url), name="up")
        fallback = TimedFallback()
        router.register(fallback)
        if resume:
            router.add_alias("chain", ["up:m", "b:m"], policy=RoutingPolicy(resume=True))
        request = ask("chain" if resume else "up:m")
        async with router:
            started = time.monotonic()
            try:
                if streaming:
                    async for event in router.stream(request):
                        times.append(time.monotonic())
                        events.append(event)
                else:
                    reply = await router.chat(request)
            except errors.PolyrouteError as exc:
                caught = exc
            if linger:
                await until_closed(up.requests, LINGER)
        recorded = list(up.requests)
    return Run(started, events, times, reply, caught, fallback, recorded, list(arrivals))


def describe(run: Run) -> dict[str, Any]:
    """A compact view of a run for assertion messages."""
    return {
        "events": [(e.type, e.provider, e.delta) for e in run.events],
        "exc": repr(run.exc),
        "requests": len(run.requests),
        "fallback_calls": len(run.fallback.calls),
    }
