"""Breakers, error-class routes, local limits, hedging, resume and health, end to end through the router."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from fakes.scripted import ScriptedProvider, Step, unavailable
from polyroute import ChatRequest, Message, Router, errors
from polyroute.router.breaker import BreakerSettings
from polyroute.router.policy import Deployment, HedgePolicy, RoutingPolicy
from polyroute.router.streaming import RESUME_INSTRUCTION
from polyroute.types import ChatStreamEvent, ToolCall


class Clock:
    """A hand-driven monotonic clock for breakers (no sleeping in tests)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def req(model: str = "a:m1", *fallbacks: str, **kw: object) -> ChatRequest:
    return ChatRequest(model=model, fallbacks=list(fallbacks), messages=[Message.user("hi")], **kw)  # type: ignore[arg-type]


def rows(attempts: list[object]) -> list[tuple[str, str, str | None]]:
    return [(a.provider, a.outcome, a.error) for a in attempts]  # type: ignore[attr-defined]


async def collect(router: Router, request: ChatRequest) -> list[ChatStreamEvent]:
    return [event async for event in router.stream(request)]


# ---------------------------------------------------------------- circuit breaker


async def test_breaker_opens_skips_fast_then_probes_after_cooldown() -> None:
    clock = Clock()
    router = Router(breaker=BreakerSettings(failure_threshold=2, cooldown=10), clock=clock)
    a = router.register(ScriptedProvider("a", [Step(error=unavailable("a"))] * 2))
    router.register(ScriptedProvider("b"))
    for _ in range(2):
        assert (await router.chat(req("a:m1", "b:m2"))).provider == "b"
    response = await router.chat(req("a:m1", "b:m2"))
    assert rows(response.attempts) == [("a", "skipped", "CircuitOpen"), ("b", "ok", None)]
    assert "next probe in 10s" in (response.attempts[0].message or "")
    assert len(a.calls) == 2  # rejected fast: not a call
    clock.now += 10
    response = await router.chat(req("a:m1", "b:m2"))
    assert response.provider == "a" and len(a.calls) == 3  # the probe succeeded...
    assert router.health().deployments[0].state == "closed"  # ...and closed the circuit


async def test_half_open_lets_one_probe_through_at_a_time() -> None:
    clock = Clock()
    router = Router(breaker=BreakerSettings(failure_threshold=1, cooldown=5), clock=clock)
    a = router.register(ScriptedProvider("a", [Step(error=unavailable("a")), Step(delay=0.1)]))
    router.register(ScriptedProvider("b"))
    await router.chat(req("a:m1", "b:m2"))
    clock.now += 5
    probe = asyncio.create_task(router.chat(req("a:m1", "b:m2")))
    await asyncio.sleep(0.01)
    other = await router.chat(req("a:m1", "b:m2"))
    assert rows(other.attempts)[0] == ("a", "skipped", "CircuitOpen")
    assert "half-open" in (other.attempts[0].message or "")
    assert (await probe).provider == "a" and len(a.calls) == 2


async def test_retry_after_is_the_breaker_cooldown() -> None:
    clock = Clock()
    router = Router(clock=clock)
    a = router.register(ScriptedProvider("a", [Step(error=errors.RateLimitedError("rl", status=429, retry_after=30))]))
    router.register(ScriptedProvider("b"))
    await router.chat(req("a:m1", "b:m2"))
    clock.now += 29
    assert rows((await router.chat(req("a:m1", "b:m2"))).attempts)[0] == ("a", "skipped", "CircuitOpen")
    clock.now += 1
    assert (await router.chat(req("a:m1", "b:m2"))).provider == "a"
    assert len(a.calls) == 2


async def test_bad_requests_do_not_open_the_breaker() -> None:
    router = Router(breaker=BreakerSettings(failure_threshold=1), clock=Clock())
    a = router.register(ScriptedProvider("a", [Step(error=errors.BadRequestError("bad", status=400))] * 3))
    for _ in range(3):
        with pytest.raises(errors.BadRequestError):
            await router.chat(req("a:m1"))
    assert len(a.calls) == 3
    assert router.health().deployments[0].state == "closed"


async def test_auth_failure_skips_loudly_until_the_key_changes(caplog: pytest.LogCaptureFixture) -> None:
    router = Router(clock=Clock())
    a = router.register(ScriptedProvider("a", [Step(error=errors.AuthenticationError("bad key", status=401))]))
    a.api_key = "sk-old-secret"  # type: ignore[attr-defined]
    router.register(ScriptedProvider("b"))
    await router.chat(req("a:m1", "b:m2"))
    with caplog.at_level(logging.WARNING, logger="polyroute.router"):
        response = await router.chat(req("a:m1", "b:m2"))
    assert rows(response.attempts)[0] == ("a", "skipped", "AuthFailed")
    assert "until the key changes" in (response.attempts[0].message or "")
    assert any("a:m1 skipped" in r.getMessage() for r in caplog.records)
    assert all("sk-old-secret" not in r.getMessage() for r in caplog.records)
    snapshot = router.health().deployments[0]
    assert snapshot.state == "auth_failed" and snapshot.key_id and "secret" not in snapshot.key_id
    a.api_key = "sk-new"  # type: ignore[attr-defined]
    assert (await router.chat(req("a:m1", "b:m2"))).provider == "a"


# ---------------------------------------------------------------- error-class routes


async def test_context_length_jumps_to_the_named_larger_candidate() -> None:
    router = Router()
    router.add_alias("chat", ["a:small", "b:other", "c:big"], policy=RoutingPolicy(on_context_length="c:big"))
    router.register(ScriptedProvider("a", [Step(error=errors.ContextLengthExceededError("too long", status=400))]))
    b = router.register(ScriptedProvider("b"))
    router.register(ScriptedProvider("c"))
    response = await router.chat(req("chat"))
    assert response.provider == "c" and b.calls == []
    assert rows(response.attempts) == [("a", "error", "ContextLengthExceededError"), ("c", "ok", None)]
    assert "c:big" in (response.attempts[0].note or "")


async def test_context_length_can_move_on_and_content_filter_stops_by_default() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(on_context_length="next"))
    router.register(
        ScriptedProvider(
            "a", [Step(error=errors.ContextLengthExceededError("long")), Step(error=errors.ContentFilteredError("no"))]
        )
    )
    b = router.register(ScriptedProvider("b"))
    assert (await router.chat(req("chat"))).provider == "b"
    with pytest.raises(errors.ContentFilteredError):
        await router.chat(req("chat"))
    assert len(b.calls) == 1


async def test_content_filter_can_route_to_a_named_candidate() -> None:
    router = Router()
    router.add_alias("chat", ["a:m"], policy=RoutingPolicy(on_content_filter="lenient"))
    router.add_alias("lenient", ["b:m"])
    router.register(ScriptedProvider("a", [Step(error=errors.ContentFilteredError("no", status=400))]))
    router.register(ScriptedProvider("b"))
    response = await router.chat(req("chat"))
    assert rows(response.attempts) == [("a", "error", "ContentFilteredError"), ("b", "ok", None)]


# ---------------------------------------------------------------- local limits


async def test_over_our_rpm_limit_goes_to_another_deployment_and_says_so() -> None:
    router = Router()
    router.add_alias("chat", [Deployment("a:m", rpm=1), "b:m"], policy=RoutingPolicy(strategy="ordered"))
    router.register(ScriptedProvider("a"))
    router.register(ScriptedProvider("b"))
    assert (await router.chat(req("chat"))).provider == "a"
    response = await router.chat(req("chat"))
    assert rows(response.attempts) == [("a", "skipped", "LocalRateLimit"), ("b", "ok", None)]


async def test_over_our_rpm_limit_waits_within_the_deadline_when_nothing_else_serves() -> None:
    router = Router(timeout=5)
    router.add_alias("chat", [Deployment("a:m", rpm=600)], policy=RoutingPolicy())  # 10 a second
    a = router.register(ScriptedProvider("a"))
    for _ in range(10):
        assert (await router.chat(req("chat"))).attempts[-1].waited == 0
    response = await router.chat(req("chat"))
    assert len(a.calls) == 11
    assert response.attempts[-1].outcome == "ok" and response.attempts[-1].waited >= 0.05
    assert "rpm/tpm" in (response.attempts[-1].note or "")


async def test_over_our_limit_past_the_deadline_fails_with_the_reason() -> None:
    router = Router(timeout=0.2)
    router.add_alias("chat", [Deployment("a:m", rpm=1)], policy=RoutingPolicy())
    router.register(ScriptedProvider("a"))
    await router.chat(req("chat"))
    with pytest.raises(errors.AllCandidatesFailedError) as caught:
        await router.chat(req("chat"))
    assert rows(caught.value.attempts) == [("a", "skipped", "LocalRateLimit")]


# ---------------------------------------------------------------- balancing through the router


async def test_weighted_alias_splits_calls_and_sticky_sessions_stay_put() -> None:
    router = Router(rng=random.Random(7))
    router.add_alias("chat", [Deployment("a:m", weight=80), Deployment("b:m", weight=20)])
    firsts = [router.candidates("chat", request=req("chat"))[0].provider for _ in range(2000)]
    assert 0.75 < firsts.count("a") / 2000 < 0.85
    router.set_policy(
        "chat", RoutingPolicy(strategy="weighted", sticky=True, deployments=router.policies["chat"].deployments)
    )
    sticky = {
        router.candidates("chat", request=req("chat", metadata={"session_id": "s-1"}))[0].provider for _ in range(50)
    }
    assert len(sticky) == 1
    spread = {
        router.candidates("chat", request=req("chat", metadata={"session_id": f"s-{i}"}))[0].provider
        for i in range(200)
    }
    assert spread == {"a", "b"}


async def test_least_in_flight_avoids_the_busy_deployment() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(strategy="least_in_flight"))
    router.register(ScriptedProvider("a", [Step(delay=0.2)]))
    router.register(ScriptedProvider("b"))
    slow = asyncio.create_task(router.chat(req("chat")))
    await asyncio.sleep(0.01)
    assert (await router.chat(req("chat"))).provider == "b"
    assert (await slow).provider == "a"


async def test_lowest_latency_prefers_the_faster_deployment_once_measured() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(strategy="lowest_latency"))
    router.register(ScriptedProvider("a", [Step(delay=0.05)] * 5))
    router.register(ScriptedProvider("b"))
    served = [(await router.chat(req("chat"))).provider for _ in range(4)]
    assert served == ["a", "b", "b", "b"]


async def test_lowest_latency_ranks_streams_by_time_to_first_token() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(strategy="lowest_latency"))
    router.register(ScriptedProvider("a", [Step(tokens=["x"], delay=0.05)] * 5))  # slow start, short
    router.register(ScriptedProvider("b", [Step(tokens=["x"] * 5, gap=0.03)] * 5))  # fast start, long
    served = [(await collect(router, req("chat")))[-1].provider for _ in range(3)]
    assert served == ["a", "b", "b"]  # by time to first token
    assert (await router.chat(req("chat"))).provider == "a"  # by total latency


async def test_lowest_cost_uses_the_price_table() -> None:
    router = Router()
    router.add_alias(
        "chat",
        [Deployment("a:m", input_price=5, output_price=15), Deployment("b:m", input_price=0.1, output_price=0.4)],
        policy=RoutingPolicy(strategy="lowest_cost"),
    )
    router.register(ScriptedProvider("a"))
    router.register(ScriptedProvider("b"))
    assert (await router.chat(req("chat"))).provider == "b"


async def test_lowest_cost_falls_back_to_the_routers_price_table() -> None:
    from polyroute.pricing import PriceTable

    prices = PriceTable({"a:m": {"input": 5, "output": 15}, "b:*": {"input": 0.1, "output": 0.4}})
    router = Router(prices=prices)
    # c:m has no price anywhere: it sorts last, behind both priced members
    router.add_alias("chat", ["c:m", "a:m", "b:m"], policy=RoutingPolicy(strategy="lowest_cost"))
    for name in ("a", "b", "c"):
        router.register(ScriptedProvider(name))
    assert [str(r) for r in router.candidates("chat", request=req("chat"))] == ["b:m", "a:m", "c:m"]
    response = await router.chat(req("chat"))
    assert response.provider == "b" and response.cost is not None and response.cost > 0


# ---------------------------------------------------------------- hedging


def hedged(delay: float = 0.05, budget: float = 1.0) -> RoutingPolicy:
    return RoutingPolicy(hedge=HedgePolicy(delay=delay, budget=budget, burst=5))


async def test_hedged_chat_takes_the_faster_answer_and_cancels_the_slow_one() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=hedged())
    a = router.register(ScriptedProvider("a", [Step(delay=5)]))
    router.register(ScriptedProvider("b"))
    response = await router.chat(req("chat"))
    assert response.provider == "b"
    assert rows(response.attempts) == [("a", "cancelled", None), ("b", "ok", None)]
    assert "hedge" in (response.attempts[1].note or "") and "lost to b:m" in (response.attempts[0].note or "")
    assert a.cancelled == 1 and a.in_flight == 0


async def test_no_hedge_when_the_first_answers_in_time_or_the_budget_is_spent() -> None:
    router = Router()
    router.add_alias("fast", ["a:m", "b:m"], policy=hedged(delay=1))
    router.add_alias("broke", ["a:m", "b:m"], policy=hedged(delay=0.01, budget=0.0))
    router.register(ScriptedProvider("a", [Step(), Step(delay=0.1)]))
    b = router.register(ScriptedProvider("b"))
    assert (await router.chat(req("fast"))).provider == "a"
    router._budgets["broke"] = router._hedge_budget(router.policies["broke"])
    router._budgets["broke"].credit = 0.0
    assert (await router.chat(req("broke"))).provider == "a"
    assert b.calls == []


async def test_hedged_stream_first_token_wins_and_the_loser_stream_is_closed() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=hedged())
    a = router.register(ScriptedProvider("a", [Step(delay=5)]))
    router.register(ScriptedProvider("b", [Step(tokens=["fast"])]))
    events = await collect(router, req("chat"))
    assert {e.provider for e in events if e.type == "token"} == {"b"}
    end = events[-1]
    assert end.response is not None and end.response.text == "fast"
    assert rows(end.response.attempts) == [("a", "cancelled", None), ("b", "ok", None)]
    assert a.cancelled == 1 and a.in_flight == 0


async def test_hedged_stream_falls_back_when_both_racers_fail_before_output() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m", "c:m"], policy=hedged())
    router.register(ScriptedProvider("a", [Step(delay=0.1, error=unavailable("a"))]))
    router.register(ScriptedProvider("b", [Step(delay=0.1, error=unavailable("b"))]))
    router.register(ScriptedProvider("c"))
    events = await collect(router, req("chat"))
    assert events[-1].response is not None
    assert [a.outcome for a in events[-1].response.attempts] == ["error", "error", "ok"]


# ---------------------------------------------------------------- resume


def broken(after: int = 2) -> Step:
    failure = errors.StreamInterruptedError("dropped", kind="disconnect")
    return Step(tokens=["The ", "answer ", "is"], error=failure, fail_after=after)


async def test_resume_continues_on_the_next_candidate_and_says_so() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(resume=True))
    router.register(ScriptedProvider("a", [broken()]))
    b = router.register(ScriptedProvider("b", [Step(tokens=["is ", "42."])]))
    events = await collect(router, req("chat"))
    assert "".join(e.delta for e in events) == "The answer is 42."
    assert not any(e.type == "error" for e in events)
    end = events[-1].response
    assert end is not None and end.text == "The answer is 42."
    assert rows(end.attempts) == [("a", "error", "StreamInterruptedError"), ("b", "resumed", None)]
    assert "resuming" in (end.attempts[0].note or "") and "resumed after 11 chars" in (end.attempts[1].note or "")
    sent = b.calls[0][1]
    assert isinstance(sent, ChatRequest)
    assert [m.role for m in sent.messages] == ["user", "assistant", "user"]
    assert sent.messages[1].content == "The answer " and sent.messages[2].content == RESUME_INSTRUCTION


async def test_no_resume_after_a_tool_call() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(resume=True))
    step = broken(1)
    step.tool_calls = [ToolCall(id="c1", name="lookup", arguments={})]
    router.register(ScriptedProvider("a", [step]))
    b = router.register(ScriptedProvider("b"))
    seen: list[ChatStreamEvent] = []
    with pytest.raises(errors.StreamInterruptedError):
        async for event in router.stream(req("chat")):
            seen.append(event)
    assert [e.type for e in seen] == ["tool_call", "token", "error"]
    assert b.calls == []


async def test_resume_with_no_candidate_left_still_ends_with_an_error_event() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(resume=True))
    router.register(ScriptedProvider("a", [broken()]))
    router.register(ScriptedProvider("b", [Step(error=unavailable("b"))]))
    seen: list[ChatStreamEvent] = []
    with pytest.raises(errors.ProviderUnavailableError) as caught:
        async for event in router.stream(req("chat")):
            seen.append(event)
    assert [e.type for e in seen] == ["token", "token", "error"]
    assert rows(caught.value.attempts) == [
        ("a", "error", "StreamInterruptedError"),
        ("b", "error", "ProviderUnavailableError"),
    ]


# ---------------------------------------------------------------- visibility


async def test_health_snapshot_shape() -> None:
    clock = Clock()
    router = Router(
        breaker=BreakerSettings(failure_threshold=1, cooldown=10), clock=clock, aliases={"chat": ["a:m1", "b:m2"]}
    )
    router.register(ScriptedProvider("a", [Step(error=unavailable("a"))]))
    router.register(ScriptedProvider("b"))
    before = router.health()
    assert [(d.provider, d.state, d.calls) for d in before.deployments] == [("a", "closed", 0), ("b", "closed", 0)]
    await router.chat(req("chat"))
    await collect(router, req("b:m2"))
    health = router.health().to_dict()
    a, b = health["deployments"]
    assert health["healthy"] is True and health["inFlight"] == 0 and health["maxConcurrency"] == 64
    assert (
        a["state"] == "open"
        and a["retryInMs"] == 10000
        and a["errorRate"] == 1.0
        and a["lastError"] == "ProviderUnavailableError"
    )
    assert b["state"] == "closed" and b["calls"] == 2 and b["inFlight"] == 0
    assert b["latencyEwmaMs"] is not None and b["latencyP50Ms"] is not None and b["ttftEwmaMs"] is not None
    assert set(a) == {
        "provider", "model", "keyId", "state", "retryInMs", "consecutiveFailures", "errorRate", "windowCalls", "calls",
        "failures", "inFlight", "latencyEwmaMs", "latencyP50Ms", "ttftEwmaMs", "ttftP50Ms", "lastError", "opened",
        "remoteState", "remoteRetryInMs",
    }  # fmt: skip
    assert (a["remoteState"], a["remoteRetryInMs"]) == (None, 0.0)  # no shared state: nothing from other replicas


async def test_attempt_to_dict_carries_the_note() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=hedged())
    router.register(ScriptedProvider("a", [Step(delay=5)]))
    router.register(ScriptedProvider("b"))
    response = await router.chat(req("chat"))
    assert [d["outcome"] for d in (a.to_dict() for a in response.attempts)] == ["cancelled", "ok"]
    assert response.attempts[1].to_dict()["note"].startswith("hedge")
