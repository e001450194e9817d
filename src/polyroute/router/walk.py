"""The non-streaming walk: chat and embeddings, with retries, fallbacks and optional hedging.

A healthy call costs one admission check, one provider call under ``asyncio.timeout_at``
and a few counter updates; tasks are only created when the alias asks for hedging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from polyroute import errors
from polyroute.providers.base import CallLimits
from polyroute.router.hedging import HedgeBudget, cancel_all, hedge_delay
from polyroute.router.plan import CallPlan, Pick, release
from polyroute.types import ChatResponse, EmbeddingResponse, ModelRef

if TYPE_CHECKING:
    from polyroute.router.router import Registration, Router

__all__ = ["walk"]

T = TypeVar("T", ChatResponse, EmbeddingResponse)
Call = Callable[["Registration", ModelRef, CallLimits], Awaitable[T]]


def wrap_unexpected(exc: Exception, ref: ModelRef, *, streaming: bool) -> errors.PolyrouteError:
    """A provider bug (KeyError on an odd payload, ...) becomes a typed, fall-back-able error."""
    what = f"{type(exc).__name__}: {exc}"
    if streaming:
        return errors.StreamInterruptedError(
            f"the provider's stream could not be read ({what})",
            kind="malformed",
            provider=ref.provider,
            model=ref.model_id,
        )
    return errors.ProviderUnavailableError(
        f"the provider's answer could not be read ({what})", provider=ref.provider, model=ref.model_id
    )


def _name(result: ChatResponse | EmbeddingResponse, pick: Pick) -> None:
    """Name the answer as the caller routes to it (a registration may rename its provider)."""
    ref = pick.ref
    if result.provider != ref.provider:  # pydantic's __setattr__ is not free: only when it differs
        result.provider = ref.provider
    if result.model != ref.model_id:
        result.model = ref.model_id


async def _attempt(router: Router, pick: Pick, deadline: float, call: Call[T]) -> T:
    """One provider call under the candidate's deadline; every failure comes out typed."""
    reg, ref, state = pick.reg, pick.ref, pick.state
    loop = asyncio.get_running_loop()
    now = loop.time()
    cand_deadline = router._candidate_deadline(reg, ref, deadline, now)
    state.in_flight += 1
    state.calls += 1
    try:
        if reg.limiter is not None:
            await reg.limiter.acquire(cand_deadline, provider=ref.provider, model=ref.model_id)
        try:
            async with asyncio.timeout_at(cand_deadline):
                return await call(reg, ref, router._limits(cand_deadline - now))
        finally:
            if reg.limiter is not None:
                reg.limiter.release()
    except TimeoutError:
        raise errors.TimeoutError(
            f"no answer within {cand_deadline - now:.3g}s", kind="total", provider=ref.provider, model=ref.model_id
        ) from None
    except errors.PolyrouteError:
        raise
    except asyncio.CancelledError:
        release(router, pick)
        raise
    except Exception as caught:
        raise wrap_unexpected(caught, ref, streaming=False) from caught
    finally:
        state.in_flight -= 1


async def _race(
    router: Router, plan: CallPlan, first: Pick, call: Call[T], *, delay: float, budget: HedgeBudget
) -> T | None:
    """Call ``first``; if it has not answered after ``delay``, race the next candidate against it.

    Returns the winner's result, or None when every racer failed (the walk moves on).
    """
    loop = asyncio.get_running_loop()
    started = {first: loop.time()}
    tasks: dict[asyncio.Task[T], Pick] = {asyncio.create_task(_attempt(router, first, plan.deadline, call)): first}
    done, _ = await asyncio.wait(tasks, timeout=delay)
    if not done and budget.spend():
        second = plan.next_now()
        if second is not None:
            plan.calls += 1
            started[second] = loop.time()
            tasks[asyncio.create_task(_attempt(router, second, plan.deadline, call))] = second
    hedged = len(tasks) > 1
    try:
        while tasks:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                pick = tasks.pop(task)
                elapsed = loop.time() - started[pick]
                exc = task.exception()
                if exc is None:
                    losers = dict(tasks)
                    tasks.clear()
                    await cancel_all(losers)
                    who = str(pick.ref)
                    for loser in losers.values():
                        lost = plan.cancelled(loser, loop.time() - started[loser], f"hedge: lost to {who}; closed")
                        plan.bill(lost)
                    result = task.result()
                    _name(result, pick)
                    note = f"hedge: raced after {delay:.3g}s; total_usage adds the loser's" if hedged else None
                    plan.succeeded(pick, elapsed, usage=result.usage, note=note)
                    return result
                if not isinstance(exc, errors.PolyrouteError):
                    raise exc
                plan.failed(pick, exc, elapsed)
                plan.decide(pick, exc)  # raises to stop; retries are not made inside a race
    finally:
        await cancel_all(tasks)
    return None


async def walk(router: Router, plan: CallPlan, call: Call[T]) -> T:
    """Try candidates in order until one answers; see :class:`CallPlan` for each decision."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    hedge = plan.policy.hedge
    budget = router._hedge_budget(plan.policy) if hedge is not None else None
    await router.limiter.acquire(plan.deadline)
    try:
        while (pick := await plan.next()) is not None:
            while True:
                now = loop.time()
                if now >= plan.deadline:
                    raise plan.give_up(errors.TimeoutError("the call's deadline passed", kind="total"))
                plan.calls += 1
                if hedge is not None and budget is not None and plan.has_more():
                    budget.earn()
                    delay = hedge_delay(hedge, pick.state.latency)
                    if delay is not None:
                        raced = await _race(router, plan, pick, call, delay=delay, budget=budget)
                        if raced is None:
                            break
                        router.finish(raced, plan.attempts, loop.time() - start)
                        return raced
                try:
                    result = await _attempt(router, pick, plan.deadline, call)
                except errors.PolyrouteError as exc:
                    plan.failed(pick, exc, loop.time() - now)
                    wait = plan.decide(pick, exc)
                    if wait is None:
                        break
                    await asyncio.sleep(wait)
                    if not plan.retry_same(pick, wait):
                        break
                    continue
                _name(result, pick)
                plan.succeeded(pick, loop.time() - now, usage=result.usage)
                router.finish(result, plan.attempts, loop.time() - start)
                return result
    finally:
        router.limiter.release()
    raise plan.give_up()
