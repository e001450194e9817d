"""Hedged requests over the wire: the first to answer wins and the loser's connection is closed at once.

Two real clients of the same wire format (OpenAI, Gemini, Anthropic), each against its own
fake upstream, in an alias with ``HedgePolicy(delay=0.2)``: ``a`` pauses 3 s before its
first token (or, for a plain call, before its answer), ``b`` answers at once. The hedge to
``b`` must start no sooner than the delay, ``b`` must win, the attempts must list ``a`` as
``cancelled`` ("hedge: lost to b:m") and ``b`` as ``ok``, and the upstream behind ``a`` must
see its connection closed within a second of ``b``'s answer, long before its pause ends.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from fakes.fault_matrix import LINGER, rows, until_closed
from fakes.upstream import FakeUpstream, Pause, Recorded, Reply
from fakes.wires import TOKENS, WIRE_IDS, WIRES, Wire
from polyroute import ChatRequest, Message, Router
from polyroute.router.policy import HedgePolicy, RoutingPolicy
from polyroute.router.tokens import usage_total
from polyroute.types import Attempt, Usage

DELAY = 0.2
#: how long the first candidate keeps the caller waiting
PAUSE = 3.0
#: how soon after the winner's answer the loser's upstream must see its connection closed
PROMPTLY = 1.0


@dataclass
class Race:
    started: float  # when the caller made the call
    won_at: float  # when the caller got the first token (stream) / the answer (chat)
    attempts: list[Attempt]
    usage: Usage
    total_usage: Usage | None
    text: str
    slow: Recorded
    fast: Recorded
    slow_arrived: float
    fast_arrived: float


async def race(wire: Wire, *, streaming: bool) -> Race:
    arrived: dict[str, float] = {}

    async def slow(request: Recorded) -> Reply:
        arrived["a"] = time.monotonic()
        if streaming:
            return Reply.sse([Pause(PAUSE), *wire.clean()])
        await asyncio.sleep(PAUSE)  # the status line itself is late: a model still thinking
        return wire.answer()

    def fast(request: Recorded) -> Reply:
        arrived["b"] = time.monotonic()
        return Reply.sse(wire.clean()) if streaming else wire.answer()

    with FakeUpstream(slow) as up_a, FakeUpstream(fast) as up_b:
        router = Router(timeout=15)
        router.register(wire.make(up_a.url), name="a")
        router.register(wire.make(up_b.url), name="b")
        router.add_alias("race", ["a:m", "b:m"], policy=RoutingPolicy(hedge=HedgePolicy(delay=DELAY, budget=1.0)))
        request = ChatRequest(model="race", messages=[Message.user("hi")])
        async with router:
            won_at, started = 0.0, time.monotonic()
            if streaming:
                deltas: list[str] = []
                async for event in router.stream(request):
                    if event.type == "token" and not deltas:
                        won_at = time.monotonic()
                    deltas.append(event.delta)
                    last = event
                assert last.type == "end" and last.response is not None
                attempts, text = last.response.attempts, "".join(deltas)
                usage, total = last.response.usage, last.response.total_usage
                assert last.response.provider == "b"
            else:
                reply = await router.chat(request)
                won_at = time.monotonic()
                attempts, text = reply.attempts, reply.text
                usage, total = reply.usage, reply.total_usage
                assert reply.provider == "b"
            # still inside the router: a connection it forgot to close would stay open here
            await until_closed(up_a.requests, LINGER)
        assert len(up_a.requests) == 1 and len(up_b.requests) == 1
        return Race(
            started, won_at, attempts, usage, total, text, up_a.requests[0], up_b.requests[0], arrived["a"], arrived["b"]
        )


def check(result: Race) -> None:
    assert result.text == "".join(TOKENS)
    # the hedge started only after the delay (measured from the call: the first request's
    # own connection set-up may take longer than the second's)
    assert result.slow_arrived < result.fast_arrived
    assert result.fast_arrived - result.started >= DELAY
    # both racers are in the attempts: the loser cancelled, the winner ok
    assert rows(result.attempts) == [("a", "cancelled", None), ("b", "ok", None)]
    loser, winner = result.attempts
    assert (loser.note or "").startswith("hedge: lost to b:m"), loser
    assert "hedge" in (winner.note or ""), winner
    # both are counted in usage: the winner's as its provider reported it, the loser's (closed
    # before it said anything) as our estimate of its prompt, and the total adds them up
    assert winner.usage == result.usage and not winner.usage_estimated and result.usage.total_tokens > 0
    assert loser.usage is not None and loser.usage_estimated
    assert (loser.usage.prompt_tokens, loser.usage.completion_tokens) == (1, 0)  # "hi": one token
    assert result.total_usage is not None
    assert result.total_usage.total_tokens == usage_total(result.usage) + 1
    # the loser's TCP connection was closed by the client at once, long before its pause ended
    closed = result.slow.closed_at
    assert closed is not None, "the loser's upstream never saw its connection closed"
    assert closed - result.won_at <= PROMPTLY, f"closed {closed - result.won_at:.3f}s after the winner answered"
    assert closed < result.slow_arrived + PAUSE - PROMPTLY
    # the winner's answer was not cut short
    assert result.fast.closed_at is None


@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_hedged_stream_first_token_wins_and_the_loser_connection_closes(wire: Wire) -> None:
    check(await race(wire, streaming=True))


@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_hedged_chat_first_answer_wins_and_the_loser_connection_closes(wire: Wire) -> None:
    check(await race(wire, streaming=False))
