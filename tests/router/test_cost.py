"""Cost per request from a price table, summed over the attempts that used tokens."""

from __future__ import annotations

import pytest

from fakes.scripted import ScriptedProvider, Step
from polyroute import ChatRequest, Message, Router, errors
from polyroute.pricing import PriceTable


def request(*fallbacks: str) -> ChatRequest:
    return ChatRequest(model="a:m", fallbacks=list(fallbacks), messages=[Message.user("hi")])


async def test_cost_is_usage_times_price_and_recorded_on_the_attempt() -> None:
    router = Router(prices=PriceTable({"a:m": {"input": 1.0, "output": 2.0}}))
    router.register(ScriptedProvider("a", [Step(tokens=["x", "y"])]))
    response = await router.chat(request())
    # scripted usage: 3 prompt tokens, 2 completion tokens; prices are per 1M tokens
    assert response.cost == pytest.approx((3 * 1.0 + 2 * 2.0) / 1_000_000)
    assert response.attempts[-1].usage is not None
    assert response.attempts[-1].usage.completion_tokens == 2
    assert response.attempts[-1].to_dict()["usage"]["completionTokens"] == 2


async def test_streamed_cost_and_failed_attempts_cost_nothing() -> None:
    router = Router(prices=PriceTable({"a:*": {"input": 1.0, "output": 1.0}, "b:m2": {"input": 10.0, "output": 10.0}}))
    router.register(ScriptedProvider("a", [Step(error=errors.ProviderUnavailableError("down", status=503))]))
    router.register(ScriptedProvider("b", [Step(tokens=["t"] * 4)]))
    events = [e async for e in router.stream(request("b:m2"))]
    response = events[-1].response
    assert response is not None and response.provider == "b"
    assert response.cost == pytest.approx((3 + 4) * 10.0 / 1_000_000)
    assert response.attempts[0].usage is None


async def test_unpriced_model_leaves_cost_unknown_not_zero() -> None:
    router = Router(prices=PriceTable({"other:x": {"input": 1.0, "output": 1.0}}))
    router.register(ScriptedProvider("a"))
    assert (await router.chat(request())).cost is None


async def test_without_a_price_table_there_is_no_cost() -> None:
    router = Router()
    router.register(ScriptedProvider("a"))
    assert (await router.chat(request())).cost is None
