"""Routing policy against scripted in-memory providers: fallbacks, limits, timeouts, retries."""

from __future__ import annotations

import asyncio

import pytest

from fakes.scripted import ScriptedProvider, Step, unavailable
from polyroute import ChatRequest, EmbeddingRequest, Message, RetryPolicy, Router, errors
from polyroute.types import ChatStreamEvent, ModelRef


def req(model: str = "a:m1", *fallbacks: str, **kw: object) -> ChatRequest:
    return ChatRequest(model=model, fallbacks=list(fallbacks), messages=[Message.user("hi")], **kw)  # type: ignore[arg-type]


async def collect(router: Router, request: ChatRequest) -> list[ChatStreamEvent]:
    return [event async for event in router.stream(request)]


@pytest.fixture
def router() -> Router:
    return Router(timeout=5.0)


@pytest.mark.parametrize(
    "failure",
    [
        unavailable("a", 503),
        errors.RateLimitedError("slow down", provider="a", model="m1", status=429, retry_after=0.01),
        errors.ProviderUnavailableError("cannot connect: ConnectError", provider="a", model="m1"),
        errors.TimeoutError("slow", kind="connect", provider="a", model="m1"),
        errors.AuthenticationError("bad key", provider="a", model="m1", status=401),
    ],
    ids=["503", "429", "refused", "connect-timeout", "401"],
)
async def test_fallback_answers_when_primary_fails(router: Router, failure: errors.PolyrouteError) -> None:
    a = router.register(ScriptedProvider("a", [Step(error=failure)]))
    router.register(ScriptedProvider("b"))
    response = await router.chat(req("a:m1", "b:m2"))
    assert (response.provider, response.model, response.text) == ("b", "m2", "Hello, world")
    assert [(x.provider, x.outcome, x.error) for x in response.attempts] == [
        ("a", "error", type(failure).__name__),
        ("b", "ok", None),
    ]
    assert response.attempts[0].status == failure.status
    assert len(a.calls) == 1  # retries default to 0: the chain is the retry


async def test_missing_key_is_skipped_and_named(router: Router) -> None:
    a = router.register(ScriptedProvider("a", missing="A_API_KEY"))
    router.register(ScriptedProvider("b"))
    response = await router.chat(req("a:m1", "b:m2"))
    assert response.provider == "b"
    assert response.attempts[0].outcome == "skipped"
    assert "A_API_KEY" in (response.attempts[0].message or "")
    assert a.calls == []


@pytest.mark.parametrize(
    "failure",
    [
        errors.BadRequestError("bad", status=400),
        errors.ContextLengthExceededError("too long", status=400),
        errors.ContentFilteredError("filtered", status=400),
    ],
)
async def test_bad_request_is_not_retried_nor_fallen_back(failure: errors.PolyrouteError) -> None:
    router = Router(retry=RetryPolicy(max_retries=3, backoff_base=0.001))
    a = router.register(ScriptedProvider("a", [Step(error=failure)]))
    b = router.register(ScriptedProvider("b"))
    with pytest.raises(type(failure)) as caught:
        await router.chat(req("a:m1", "b:m2"))
    assert len(a.calls) == 1 and b.calls == []
    assert [x.provider for x in caught.value.attempts] == ["a"]


async def test_every_candidate_failing_reports_every_attempt(router: Router) -> None:
    router.register(ScriptedProvider("a", [Step(error=unavailable("a", 503))]))
    router.register(ScriptedProvider("b", [Step(error=errors.RateLimitedError("rl", status=429))]))
    with pytest.raises(errors.AllCandidatesFailedError) as caught:
        await router.chat(req("a:m1", "b:m2", "nobody:m3"))
    rows = [(x.provider, x.model, x.outcome, x.error, x.status) for x in caught.value.attempts]
    assert rows == [
        ("a", "m1", "error", "ProviderUnavailableError", 503),
        ("b", "m2", "error", "RateLimitedError", 429),
        ("nobody", "m3", "skipped", "NotConfiguredError", None),
    ]
    assert all(x.elapsed >= 0 for x in caught.value.attempts)
    assert "a:m1" in str(caught.value) and "b:m2" in str(caught.value)
    assert caught.value.details()["attempts"][0]["status"] == 503


async def test_retry_waits_at_least_retry_after_then_succeeds() -> None:
    router = Router(retry=RetryPolicy(max_retries=2, backoff_base=0.001))
    a = router.register(ScriptedProvider("a", [Step(error=errors.RateLimitedError("rl", status=429, retry_after=0.2))]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    response = await router.chat(req("a:m1"))
    assert loop.time() - start >= 0.2
    assert len(a.calls) == 2
    assert response.attempts[-1].retry == 1 and response.attempts[-1].waited >= 0.2


async def test_retry_after_beyond_deadline_moves_on_instead_of_sleeping() -> None:
    router = Router(timeout=1.0, retry=RetryPolicy(max_retries=2))
    router.register(ScriptedProvider("a", [Step(error=errors.RateLimitedError("rl", status=429, retry_after=5))]))
    router.register(ScriptedProvider("b"))
    loop = asyncio.get_running_loop()
    start = loop.time()
    response = await router.chat(req("a:m1", "b:m2"))
    assert response.provider == "b" and loop.time() - start < 0.5


async def test_attempt_cap_stops_retry_storms() -> None:
    router = Router(retry=RetryPolicy(max_retries=10, backoff_base=0.0001, max_attempts=3))
    a = router.register(ScriptedProvider("a", [Step(error=unavailable("a"))] * 10))
    with pytest.raises(errors.AllCandidatesFailedError):
        await router.chat(req("a:m1"))
    assert len(a.calls) == 3


async def test_aliases_expand_in_order_and_deduplicate() -> None:
    router = Router(aliases={"smart": ["a:big", "fast"], "fast": ["b:small", "a:big"]})
    assert [str(r) for r in router.candidates("smart", ["b:small", "c:x"])] == ["a:big", "b:small", "c:x"]
    with pytest.raises(errors.ConfigError, match="unknown model alias"):
        router.candidates("nope")
    router.add_alias("loop", ["loop"])
    with pytest.raises(errors.ConfigError, match="cycle"):
        router.candidates("loop")


async def test_model_ref_overrides_apply_per_candidate(router: Router) -> None:
    a = router.register(ScriptedProvider("a"))
    ref = ModelRef(provider="a", model_id="m1", temperature=0.1, max_tokens=7)
    await router.chat(ChatRequest(model=ref, messages=[Message.user("x")], temperature=0.9))
    sent = a.calls[0][1]
    assert isinstance(sent, ChatRequest) and (sent.temperature, sent.max_tokens) == (0.1, 7)


async def test_model_ref_timeout_bounds_that_candidate_only() -> None:
    router = Router(timeout=5)
    router.register(ScriptedProvider("a", [Step(delay=2)]))
    router.register(ScriptedProvider("b"))
    ref = ModelRef(provider="a", model_id="slow", timeout_ms=100)
    response = await router.chat(ChatRequest(model=ref, fallbacks=["b:m"], messages=[Message.user("x")]))
    assert response.provider == "b"
    assert response.attempts[0].error == "TimeoutError"


async def test_total_timeout_is_one_deadline_across_the_chain() -> None:
    router = Router(timeout=0.3)
    router.register(ScriptedProvider("a", [Step(delay=1)]))
    router.register(ScriptedProvider("b", [Step(delay=1)]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(errors.AllCandidatesFailedError) as caught:
        await router.chat(req("a:m1", "b:m2"))
    assert loop.time() - start < 0.6
    assert caught.value.attempts[0].error == "TimeoutError"


async def test_per_request_timeout_overrides_router_timeout() -> None:
    router = Router(timeout=10)
    router.register(ScriptedProvider("a", [Step(delay=1)]))
    with pytest.raises(errors.AllCandidatesFailedError) as caught:
        await router.chat(req("a:m1", timeout=0.1))
    assert isinstance(caught.value.last_error, errors.TimeoutError)
    assert caught.value.last_error.kind == "total"


async def test_global_concurrency_limit_is_honoured() -> None:
    router = Router(max_concurrency=3, timeout=5)
    a = router.register(ScriptedProvider("a", [Step(delay=0.05) for _ in range(12)]))
    results = await asyncio.gather(*(router.chat(req("a:m1")) for _ in range(12)))
    assert len(results) == 12 and a.peak == 3


async def test_provider_concurrency_limit_is_honoured() -> None:
    router = Router(timeout=5)
    a = router.register(ScriptedProvider("a", [Step(delay=0.05) for _ in range(10)]), max_concurrency=2)
    await asyncio.gather(*(router.chat(req("a:m1")) for _ in range(10)))
    assert a.peak == 2


async def test_waiting_for_a_slot_fails_clearly_at_the_deadline() -> None:
    router = Router(max_concurrency=1, timeout=0.2)
    router.register(ScriptedProvider("a", [Step(delay=1), Step()]))
    slow = asyncio.create_task(router.chat(req("a:m1", timeout=2)))
    await asyncio.sleep(0.01)
    with pytest.raises(errors.CapacityError, match="no free slot"):
        await router.chat(req("a:m1"))
    slow.cancel()


async def test_embeddings_fall_back_and_keep_order(router: Router) -> None:
    router.register(ScriptedProvider("a", [Step(error=unavailable("a"))]))
    router.register(ScriptedProvider("b"))
    response = await router.embed(EmbeddingRequest(model="a:e", fallbacks=["b:e"], input=["x", "yy", "zzz"]))
    assert response.provider == "b" and response.vectors == [[1.0, 0.0], [2.0, 1.0], [3.0, 2.0]]


async def test_provider_bug_becomes_a_typed_error(router: Router) -> None:
    a = router.register(ScriptedProvider("a"))

    async def broken(*args: object) -> None:
        raise KeyError("choices")

    a.chat = broken  # type: ignore[method-assign]
    router.register(ScriptedProvider("b"))
    response = await router.chat(req("a:m1", "b:m2"))
    assert response.provider == "b" and response.attempts[0].error == "ProviderUnavailableError"


# ---------------------------------------------------------------- streaming


async def test_stream_relays_tokens_and_ends_with_the_assembled_response(router: Router) -> None:
    router.register(ScriptedProvider("a", [Step(tokens=["Hi", " there", "\n", " "])]))
    events = await collect(router, req("a:m1"))
    assert [e.type for e in events] == ["token"] * 4 + ["usage", "end"]
    assert "".join(e.delta for e in events) == "Hi there\n "
    end = events[-1]
    assert end.done and end.response is not None
    assert end.response.text == "Hi there\n " and end.response.usage.completion_tokens == 4
    assert [a.outcome for a in end.response.attempts] == ["ok"]


async def test_stream_falls_back_before_the_first_token(router: Router) -> None:
    router.register(ScriptedProvider("a", [Step(error=unavailable("a"))]))
    router.register(ScriptedProvider("b"))
    events = await collect(router, req("a:m1", "b:m2"))
    assert {e.provider for e in events} == {"b"}
    assert events[-1].response is not None
    assert [a.outcome for a in events[-1].response.attempts] == ["error", "ok"]


async def test_the_first_stream_event_names_the_answering_candidate_and_what_came_before(router: Router) -> None:
    router.register(ScriptedProvider("a", [Step(error=unavailable("a"))]))
    router.register(ScriptedProvider("b-provider"), name="b")  # the registration name is what callers know
    events = await collect(router, req("a:m1", "b:m2"))
    first = events[0]
    assert (first.type, first.provider, first.model) == ("token", "b", "m2")
    assert [(a.provider, a.outcome) for a in first.attempts] == [("a", "error")]  # a snapshot, taken then
    assert events[1].attempts == []  # only the first event carries it


async def test_stream_failure_after_a_token_is_an_error_event_then_the_exception(router: Router) -> None:
    failure = errors.StreamInterruptedError("dropped", kind="disconnect", provider="a", model="m1")
    router.register(ScriptedProvider("a", [Step(error=failure, fail_after=1)]))
    b = router.register(ScriptedProvider("b"))
    seen: list[ChatStreamEvent] = []
    with pytest.raises(errors.StreamInterruptedError):
        async for event in router.stream(req("a:m1", "b:m2")):
            seen.append(event)
    assert [e.type for e in seen] == ["token", "error"]
    assert seen[-1].done and seen[-1].error is failure
    assert b.calls == []  # output reached the caller: no silent switch


async def test_stream_that_stops_without_end_is_truncated_not_complete(router: Router) -> None:
    router.register(ScriptedProvider("a", [Step(tokens=["half"], finish=False)]))
    seen: list[ChatStreamEvent] = []
    with pytest.raises(errors.StreamInterruptedError) as caught:
        async for event in router.stream(req("a:m1")):
            seen.append(event)
    assert caught.value.kind == "truncated"
    assert seen[-1].type == "error"


async def test_first_token_timeout_falls_back() -> None:
    router = Router(first_token_timeout=0.1, timeout=5)
    router.register(ScriptedProvider("a", [Step(delay=2)]))
    router.register(ScriptedProvider("b"))
    events = await collect(router, req("a:m1", "b:m2"))
    assert events[-1].provider == "b"
    assert events[-1].response is not None
    assert events[-1].response.attempts[0].error == "TimeoutError"


async def test_idle_timeout_after_tokens_is_an_error() -> None:
    router = Router(idle_timeout=0.1, timeout=5)
    router.register(ScriptedProvider("a", [Step(tokens=["a", "b"], gap=1)]))
    with pytest.raises(errors.TimeoutError) as caught:
        await collect(router, req("a:m1"))
    assert caught.value.kind == "idle"


async def test_total_timeout_ends_a_long_stream() -> None:
    router = Router(timeout=0.3, idle_timeout=1)
    router.register(ScriptedProvider("a", [Step(tokens=["t"] * 50, gap=0.05)]))
    with pytest.raises(errors.TimeoutError) as caught:
        await collect(router, req("a:m1"))
    assert caught.value.kind == "total"


async def test_breaking_out_of_a_stream_releases_slots() -> None:
    router = Router(max_concurrency=1)
    a = router.register(ScriptedProvider("a", [Step(tokens=["x"] * 10), Step()]), max_concurrency=1)
    async for _ in router.stream(req("a:m1")):
        break
    await asyncio.sleep(0)
    response = await router.chat(req("a:m1", timeout=0.5))
    assert response.provider == "a" and a.in_flight == 0


def test_blocking_facade() -> None:
    router = Router()
    router.register(ScriptedProvider("a"))
    with router.sync as sync:
        assert sync.chat(req("a:m1")).text == "Hello, world"
        assert [e.type for e in sync.stream(req("a:m1"))][-1] == "end"
