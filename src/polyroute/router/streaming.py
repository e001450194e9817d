"""The streaming walk: first-token and idle deadlines, fallback before output, and after it
either an ``error`` event and the exception, or (opt-in) a resume on the next candidate.

Events before a candidate's first token are held back, so a failure there can still fall
through silently to the next candidate; once a token or tool call has been released the
stream is *committed* and a failure is never hidden. With ``resume`` on, a broken stream
that emitted only text continues on the next candidate, which is sent the conversation
plus the partial reply and asked to carry on; the attempts say so.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING

from polyroute import errors
from polyroute.router.hedging import HedgeBudget, cancel_all, hedge_delay
from polyroute.router.plan import CallPlan, Pick, release
from polyroute.router.walk import wrap_unexpected
from polyroute.types import ChatRequest, ChatResponse, ChatStreamEvent, Message, ToolCall, Usage

if TYPE_CHECKING:
    from polyroute.router.router import Router

__all__ = ["RESUME_INSTRUCTION", "resume_request", "stream_walk"]

RESUME_INSTRUCTION = (
    "Your previous reply was cut off. Continue it exactly where it stopped: do not repeat "
    "anything already written and do not comment on the interruption."
)


def resume_request(request: ChatRequest, partial: str) -> ChatRequest:
    """The request that asks the next candidate to continue ``partial``."""
    messages = [*request.messages, Message.assistant(partial), Message.user(RESUME_INSTRUCTION)]
    return request.model_copy(update={"messages": messages})


class StreamRun:
    """One candidate's stream under the router's first-token, idle and total deadlines."""

    __slots__ = ("committed", "deadline", "pick", "request", "router", "started", "text", "tool_calls", "usage")

    def __init__(self, router: Router, pick: Pick, request: ChatRequest, deadline: float) -> None:
        self.router = router
        self.started = 0.0
        self.pick = pick
        self.request = request
        self.deadline = deadline
        self.committed = False
        self.text: list[str] = []
        self.tool_calls: list[ToolCall] = []
        #: the token counts the provider reported so far (None: none yet)
        self.usage: Usage | None = None

    def _timeout(self, kind: errors.TimeoutKind, seconds: float) -> errors.TimeoutError:
        what = {"first_token": "no first token", "idle": "no stream event", "total": "the stream did not finish"}.get(
            kind, kind
        )
        ref = self.pick.ref
        return errors.TimeoutError(
            f"{what} within {seconds:.3g}s", kind=kind, provider=ref.provider, model=ref.model_id
        )

    async def events(self) -> AsyncGenerator[ChatStreamEvent, None]:
        loop = asyncio.get_running_loop()
        router, pick = self.router, self.pick
        ref, reg, state = pick.ref, pick.reg, pick.state
        started = self.started = loop.time()
        state.in_flight += 1
        state.calls += 1
        acquired = False
        upstream: AsyncIterator[ChatStreamEvent] | None = None
        finished = False
        held: list[ChatStreamEvent] = []
        text, tool_calls = self.text, self.tool_calls
        first_gap = router.first_token_timeout or math.inf
        idle_gap = router.idle_timeout or math.inf
        try:
            if reg.limiter is not None:
                await reg.limiter.acquire(self.deadline, provider=ref.provider, model=ref.model_id)
                acquired = True
            upstream = reg.provider.stream(ref.model_id, self.request, router._limits(self.deadline - started))
            while True:
                now = loop.time()
                if self.committed:
                    kind: errors.TimeoutKind = "idle" if now + idle_gap < self.deadline else "total"
                    when = min(self.deadline, now + idle_gap)
                else:
                    kind = "first_token" if started + first_gap < self.deadline else "total"
                    when = min(self.deadline, started + first_gap)
                try:
                    async with asyncio.timeout_at(when):
                        event = await upstream.__anext__()
                except StopAsyncIteration:
                    raise errors.StreamInterruptedError(
                        "the stream ended without a finish marker",
                        kind="truncated",
                        provider=ref.provider,
                        model=ref.model_id,
                    ) from None
                except TimeoutError:
                    raise self._timeout(kind, when - (now if self.committed else started)) from None
                except errors.PolyrouteError:
                    raise
                except Exception as exc:
                    raise wrap_unexpected(exc, ref, streaming=True) from exc
                # the names the caller routes by (a registration may rename its provider)
                event.provider, event.model = ref.provider, ref.model_id
                etype = event.type
                if etype == "token":
                    text.append(event.delta)
                elif etype == "tool_call":
                    if event.tool_call is not None:
                        tool_calls.append(event.tool_call)
                elif etype == "usage":
                    self.usage = event.usage
                elif etype == "error":
                    raise event.error or errors.StreamInterruptedError(
                        "the provider reported an error",
                        kind="provider_error",
                        provider=ref.provider,
                        model=ref.model_id,
                    )
                if etype == "end":
                    usage = self.usage = event.usage or self.usage
                    message = Message.model_construct(
                        role="assistant",
                        content="".join(text) or None,
                        tool_calls=tool_calls or None,
                        name=None,
                        tool_call_id=None,
                    )
                    event.response = ChatResponse.model_construct(
                        id=event.response.id if event.response is not None else "",
                        message=message,
                        finish_reason=event.finish_reason or "stop",
                        usage=usage or Usage(),
                        provider=ref.provider,
                        model=ref.model_id,
                        latency=0.0,
                        attempts=[],
                    )
                    event.usage = event.response.usage
                    if not self.committed:
                        self.committed = True
                        state.ttft.add(loop.time() - started)
                    finished = True
                    for early in held:
                        yield early
                    yield event
                    return
                if self.committed:
                    yield event
                elif etype in ("token", "tool_call"):
                    self.committed = True
                    state.ttft.add(loop.time() - started)
                    for early in held:
                        yield early
                    held.clear()
                    yield event
                else:
                    held.append(event)
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                release(router, pick)
            raise
        finally:
            state.in_flight -= 1
            if upstream is not None:
                close = getattr(upstream, "aclose", None)
                if close is not None:
                    await close()
            if acquired and reg.limiter is not None:
                reg.limiter.release()


Events = AsyncGenerator[ChatStreamEvent, None]


async def _first(events: Events) -> ChatStreamEvent:
    return await events.__anext__()


async def _prepend(first: ChatStreamEvent, events: Events) -> Events:
    async with aclosing(events):
        yield first
        async for event in events:
            yield event


async def _close(events: Events) -> None:
    await events.aclose()


Raced = tuple[StreamRun, Events, str | None]


async def _race(
    plan: CallPlan, run: StreamRun, request: ChatRequest, delay: float, budget: HedgeBudget
) -> Raced | None:
    """Start ``run``; if it has no first token after ``delay``, race the next candidate against it.

    Returns the winner, its events (first one included) and a note; or None when every racer
    failed before its first token (the walk moves on). The losers are cancelled, which closes
    their upstream streams at once, and recorded as ``cancelled`` attempts.
    """
    loop = asyncio.get_running_loop()
    router = run.router
    gens: dict[StreamRun, Events] = {run: run.events()}
    tasks: dict[asyncio.Task[ChatStreamEvent], StreamRun] = {asyncio.create_task(_first(gens[run])): run}
    done, _ = await asyncio.wait(tasks, timeout=delay)
    if not done and budget.spend():
        second = plan.next_now()
        if second is not None:
            plan.calls += 1
            other = StreamRun(router, second, router._apply_ref(request, second.ref), run.deadline)
            gens[other] = other.events()
            tasks[asyncio.create_task(_first(gens[other]))] = other
    note = f"hedge: raced after {delay:.3g}s; total_usage adds the loser's" if len(tasks) > 1 else None
    try:
        while tasks:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                racer = tasks.pop(task)
                exc = task.exception()
                if exc is None:
                    losers = dict(tasks)
                    tasks.clear()
                    await cancel_all(losers)
                    for loser in losers.values():
                        await _close(gens[loser])
                        lost = plan.cancelled(
                            loser.pick, loop.time() - loser.started, f"hedge: lost to {racer.pick.ref}; closed"
                        )
                        plan.bill(lost, loser.usage, "".join(loser.text), len(loser.text))
                    return racer, _prepend(task.result(), gens.pop(racer)), note
                await _close(gens[racer])
                if not isinstance(exc, errors.PolyrouteError):
                    raise exc
                plan.failed(racer.pick, exc, loop.time() - racer.started)
                plan.decide(racer.pick, exc)  # raises to stop; no retries inside a race
    finally:
        await cancel_all(tasks)
        for gen in gens.values():
            await _close(gen)
    return None


async def stream_walk(router: Router, plan: CallPlan, request: ChatRequest) -> AsyncGenerator[ChatStreamEvent, None]:
    """Stream the first candidate that produces output; see the module docstring."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    policy = plan.policy
    hedge = policy.hedge
    budget = router._hedge_budget(policy) if hedge is not None else None
    partial = ""  # text already relayed to the caller by candidates that then broke
    resumable = policy.resume
    current = request
    stop: errors.PolyrouteError | None = None
    told = False  # the caller's first event says who answers and what was tried before it
    await router.limiter.acquire(plan.deadline)
    try:
        while stop is None and (pick := await plan.next()) is not None:
            while True:
                now = loop.time()
                if now >= plan.deadline:
                    stop = errors.TimeoutError("the call's deadline passed", kind="total")
                    break
                plan.calls += 1
                run = StreamRun(
                    router,
                    pick,
                    router._apply_ref(current, pick.ref),
                    router._candidate_deadline(pick.reg, pick.ref, plan.deadline, now),
                )
                note: str | None = None
                events: Events | None = None
                if budget is not None and hedge is not None and not partial and plan.has_more():
                    budget.earn()
                    delay = hedge_delay(hedge, pick.state.ttft)
                    if delay is not None:
                        raced = await _race(plan, run, current, delay, budget)
                        if raced is None:
                            break
                        run, events, note = raced
                        pick = run.pick
                if events is None:
                    events = run.events()
                try:
                    async with aclosing(events):
                        async for event in events:
                            if event.type == "end":
                                assert event.response is not None
                                if partial:
                                    message = event.response.message
                                    message.content = partial + (
                                        message.content if isinstance(message.content, str) else ""
                                    )
                                    note = f"resumed after {len(partial)} chars; total_usage adds the broken stream's"
                                plan.succeeded(
                                    pick,
                                    loop.time() - run.started,
                                    usage=event.response.usage,
                                    outcome="resumed" if partial else "ok",
                                    note=note,
                                )
                                router.finish(event.response, plan.attempts, loop.time() - start)
                                event.attempts = plan.attempts
                            elif not told:
                                # a snapshot: the list grows as the call goes on
                                event.attempts = list(plan.attempts)
                            told = True
                            yield event
                    return
                except errors.PolyrouteError as exc:
                    broke = plan.failed(pick, exc, loop.time() - run.started)
                    if run.committed:
                        # output reached the caller, so the provider billed it: say what it cost
                        plan.bill(broke, run.usage, "".join(run.text), len(run.text))
                    if run.committed or partial:
                        resumable = resumable and not run.tool_calls
                        partial += "".join(run.text)
                        if resumable and partial and exc.fallback and plan.has_more():
                            plan.attempts[
                                -1
                            ].note = f"stream broke after {len(partial)} chars; resuming on the next candidate"
                            current = resume_request(request, partial)
                            break
                        exc.attempts = plan.attempts
                        yield ChatStreamEvent(
                            "error",
                            error=exc,
                            provider=pick.ref.provider,
                            model=pick.ref.model_id,
                            attempts=plan.attempts,
                        )
                        raise
                    wait = plan.decide(pick, exc)
                    if wait is None:
                        break
                    await asyncio.sleep(wait)
                    if not plan.retry_same(pick, wait):
                        break
        failure = plan.give_up(stop)
        if partial:
            yield ChatStreamEvent("error", error=failure, attempts=plan.attempts)
        raise failure
    finally:
        router.limiter.release()
