"""Usage that is really spent: hedge losers and broken streams are billed, tpm debits settle to the truth."""

from __future__ import annotations

import pytest

from fakes.scripted import ScriptedProvider, Step
from polyroute import ChatRequest, Message, Router, errors
from polyroute.pricing import PriceTable
from polyroute.router.policy import Deployment, HedgePolicy, RoutingPolicy
from polyroute.router.tokens import estimated_usage, prompt_tokens, text_tokens, usage_total
from polyroute.types import ChatStreamEvent, EmbeddingRequest, Usage

PROMPT = "x" * 400  # 101 estimated prompt tokens (4 characters a token, plus one)


class Frozen:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def req(model: str = "chat", **kw: object) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message.user(PROMPT)], **kw)  # type: ignore[arg-type]


def hedged_router(**kw: object) -> Router:
    router = Router(**kw)  # type: ignore[arg-type]
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(hedge=HedgePolicy(delay=0.05, budget=1.0)))
    return router


async def stream(router: Router, request: ChatRequest) -> list[ChatStreamEvent]:
    return [event async for event in router.stream(request)]


# ---------------------------------------------------------------- estimates


def test_estimates_count_four_characters_a_token_and_never_nothing() -> None:
    assert prompt_tokens(req()) == 101
    assert prompt_tokens(EmbeddingRequest(model="e:m", input=["abcd", "efgh"])) == 3
    assert text_tokens("") == 0 and text_tokens("abcde") == 2 and text_tokens("ab", pieces=3) == 3
    usage = estimated_usage(req(), "hello world!", pieces=2)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (101, 3, 104)
    assert usage_total(Usage(prompt_tokens=2, completion_tokens=5)) == 7
    assert usage_total(Usage(prompt_tokens=2, completion_tokens=5, total_tokens=9)) == 9


# ---------------------------------------------------------------- hedge losers


async def test_hedged_chat_counts_the_losers_usage_as_an_estimate() -> None:
    router = hedged_router(prices=PriceTable({"a:m": {"input": 1.0, "output": 1.0}, "b:m": {"input": 2.0, "output": 2.0}}))
    router.register(ScriptedProvider("a", [Step(delay=5)]))
    router.register(ScriptedProvider("b", [Step(tokens=["ok"])]))
    response = await router.chat(req())
    loser, winner = response.attempts
    assert (loser.outcome, winner.outcome) == ("cancelled", "ok")
    assert loser.usage is not None and loser.usage_estimated
    assert (loser.usage.prompt_tokens, loser.usage.completion_tokens) == (101, 0)
    assert winner.usage == response.usage and not winner.usage_estimated
    # the answer's own usage is unchanged; the total adds what the loser was billed
    assert response.usage.total_tokens == 4
    assert response.total_usage is not None and response.total_usage.total_tokens == 4 + 101
    assert response.cost == pytest.approx((101 * 1.0 + (3 + 1) * 2.0) / 1e6)
    row = loser.to_dict()
    assert row["usageEstimated"] is True and row["usage"]["promptTokens"] == 101


async def test_hedged_stream_loser_is_billed_what_it_reported_before_losing() -> None:
    reported = Usage(prompt_tokens=90, completion_tokens=0, total_tokens=90)
    router = hedged_router()
    # a reports usage at once but its first token only comes 5 s later: b's token wins
    router.register(ScriptedProvider("a", [Step(delay=5, usage=reported, usage_first=True)]))
    router.register(ScriptedProvider("b", [Step(delay=0.1, tokens=["fast"])]))
    end = (await stream(router, req()))[-1]
    assert end.response is not None and end.response.provider == "b"
    loser = end.response.attempts[0]
    assert loser.outcome == "cancelled" and loser.usage == reported and not loser.usage_estimated
    assert end.response.total_usage is not None
    assert end.response.total_usage.total_tokens == 90 + end.response.usage.total_tokens


async def test_hedged_stream_loser_without_a_report_is_estimated() -> None:
    router = hedged_router()
    router.register(ScriptedProvider("a", [Step(delay=5)]))
    router.register(ScriptedProvider("b", [Step(tokens=["fast"])]))
    end = (await stream(router, req()))[-1]
    assert end.response is not None
    loser = end.response.attempts[0]
    assert loser.usage_estimated and loser.usage is not None and loser.usage.prompt_tokens == 101
    assert end.response.total_usage is not None and end.response.total_usage.prompt_tokens == 101 + 3


async def test_an_unhedged_call_totals_its_own_usage_only() -> None:
    router = Router()
    router.register(ScriptedProvider("a"))
    response = await router.chat(req("a:m"))
    assert response.total_usage == response.usage and not response.attempts[0].usage_estimated


# ---------------------------------------------------------------- broken streams


def broken() -> Step:
    return Step(tokens=["The ", "answer ", "is"], error=errors.StreamInterruptedError("dropped"), fail_after=2)


async def test_a_resumed_stream_totals_the_broken_attempt_and_the_continuation() -> None:
    router = Router()
    router.add_alias("chat", ["a:m", "b:m"], policy=RoutingPolicy(resume=True))
    router.register(ScriptedProvider("a", [broken()]))
    router.register(ScriptedProvider("b", [Step(tokens=["42."])]))
    end = (await stream(router, req()))[-1]
    assert end.response is not None
    cut, resumed = end.response.attempts
    assert (cut.outcome, resumed.outcome) == ("error", "resumed")
    # "The answer " is 11 characters in 2 chunks: 3 estimated output tokens on top of the prompt
    assert cut.usage_estimated and cut.usage is not None
    assert (cut.usage.prompt_tokens, cut.usage.completion_tokens) == (101, 3)
    assert end.response.usage.total_tokens == 4
    assert end.response.total_usage is not None and end.response.total_usage.total_tokens == 104 + 4
    assert "total_usage" in (resumed.note or "")


async def test_a_stream_broken_after_output_reports_its_cost_on_the_error() -> None:
    router = Router()
    router.register(ScriptedProvider("a", [broken()]))
    with pytest.raises(errors.StreamInterruptedError) as caught:
        await stream(router, req("a:m"))
    (attempt,) = caught.value.attempts
    assert attempt.usage_estimated and attempt.usage is not None and attempt.usage.completion_tokens == 3


async def test_a_failure_before_output_is_not_billed() -> None:
    router = Router()
    router.register(ScriptedProvider("a", [Step(error=errors.ProviderUnavailableError("down", status=503))]))
    router.register(ScriptedProvider("b"))
    end = (await stream(router, ChatRequest(model="a:m", fallbacks=["b:m"], messages=[Message.user(PROMPT)])))[-1]
    assert end.response is not None and end.response.attempts[0].usage is None


# ---------------------------------------------------------------- tpm settles to the reported usage


def metered(tpm: int, clock: Frozen, steps: list[Step]) -> tuple[Router, ScriptedProvider]:
    router = Router(clock=clock)
    router.add_alias("chat", [Deployment("a:m", tpm=tpm)], policy=RoutingPolicy(strategy="ordered"))
    provider = router.register(ScriptedProvider("a", steps))
    assert isinstance(provider, ScriptedProvider)
    return router, provider


async def test_a_tpm_debit_settles_to_the_tokens_the_call_reported() -> None:
    clock = Frozen()
    # 60000 tpm: a bucket of 1000 tokens; the estimate is 101 prompt + 400 max_tokens = 501
    router, _ = metered(60_000, clock, [Step(usage=Usage(prompt_tokens=90, completion_tokens=30, total_tokens=120))])
    await router.chat(req(max_tokens=400))
    bucket = router.deployments.get("a", "m").tpm
    assert bucket is not None and bucket.level(clock.now) == pytest.approx(1000 - 120)


async def test_settled_debits_admit_what_the_real_usage_allows_not_what_the_estimate_did() -> None:
    clock = Frozen()  # never refills
    small = [Step(usage=Usage(prompt_tokens=50, completion_tokens=50, total_tokens=100)) for _ in range(20)]
    router, provider = metered(60_000, clock, small)
    served = 0
    for _ in range(20):
        try:
            await router.chat(req(max_tokens=400, timeout=0.2))
        except errors.AllCandidatesFailedError:
            break
        served += 1
    # admission needs the estimate (501) to be there, as a provider checking max_tokens does;
    # unsettled, the first call leaves 499 and nothing more is admitted; settled to 100 a call,
    # the bucket holds 1000, 900, ..., 600 before each of five calls, then 500 < 501
    assert served == 5 and len(provider.calls) == 5


async def test_a_call_that_used_more_than_estimated_delays_the_next_one() -> None:
    clock = Frozen()
    big = Usage(prompt_tokens=100, completion_tokens=1500, total_tokens=1600)
    router, provider = metered(60_000, clock, [Step(usage=big), Step()])
    await router.chat(req())
    bucket = router.deployments.get("a", "m").tpm
    assert bucket is not None and bucket.level(clock.now) == pytest.approx(1000 - 1600)
    with pytest.raises(errors.AllCandidatesFailedError) as caught:
        await router.chat(req(timeout=0.2))
    assert caught.value.attempts[0].error == "LocalRateLimit" and len(provider.calls) == 1


async def test_a_streamed_call_settles_too() -> None:
    clock = Frozen()
    router, _ = metered(60_000, clock, [Step(usage=Usage(prompt_tokens=10, completion_tokens=10, total_tokens=20))])
    await stream(router, req(max_tokens=300))
    bucket = router.deployments.get("a", "m").tpm
    assert bucket is not None and bucket.level(clock.now) == pytest.approx(1000 - 20)
