"""Backoff spacing over the wire: three overloaded answers, then a clean one, with retries on.

The upstream (a real OpenAI / Gemini / Anthropic client on the other end) answers its
provider's overloaded error (HTTP 503; Anthropic's 529) three times, then a clean reply.
With ``RetryPolicy(max_retries=3, backoff_base=0.2)`` and a seeded ``Router(rng=...)`` the
router must retry the same candidate three times, each retry's recorded ``waited`` within
its full-jitter bound (0.2, 0.4, 0.8: the bound doubles) and exactly the policy's draw from
that rng, and the upstream must see each request no sooner than that wait after the last.
"""

from __future__ import annotations

import random

import pytest

from fakes.fault_matrix import TOKENS, WIRE_IDS, WIRES, Run, Wire, describe, rows, run_through
from fakes.upstream import Reply
from polyroute import RetryPolicy, errors

BASE = 0.2
BOUNDS = [0.2, 0.4, 0.8]
#: with this seed the draws are 0.125, 0.297, 0.636: the second and third waits exceed the
#: bound before them, so they could only happen because the bound grew
SEED = 5


class TopOfRange(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def policy_waits(rng: random.Random) -> list[float | None]:
    """What the run's policy draws for retries 1, 2, 3 from ``rng`` (TopOfRange: the bounds)."""
    policy = RetryPolicy(max_retries=3, backoff_base=BASE)
    error = errors.ProviderUnavailableError("503")
    return [policy.wait_before_retry(n, error, rng) for n in (1, 2, 3)]


def check_spacing(run: Run) -> None:
    attempts = run.end.attempts
    unavailable = errors.ProviderUnavailableError.__name__
    assert rows(attempts) == [("up", "error", unavailable)] * 3 + [("up", "ok", None)], describe(run)
    assert [a.retry for a in attempts] == [0, 1, 2, 3]
    assert len(run.requests) == 4 and run.fallback.calls == []
    waited = [a.waited for a in attempts[1:]]
    assert all(w <= b for w, b in zip(waited, BOUNDS, strict=True)), waited
    assert policy_waits(TopOfRange()) == pytest.approx(BOUNDS)  # the bound doubles per retry
    # the router's jitter is the policy's draw from the router's own rng: reproducible
    assert waited == pytest.approx(policy_waits(random.Random(SEED)))
    assert waited[1] > BOUNDS[0] and waited[2] > BOUNDS[1]
    gaps = [later - earlier for earlier, later in zip(run.arrivals, run.arrivals[1:], strict=False)]
    for gap, wait in zip(gaps, waited, strict=True):
        assert gap >= wait, f"a retry reached the upstream {gap:.3f}s after the last, before its {wait:.3f}s backoff"


@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_stream_backoff_spacing_grows(wire: Wire) -> None:
    replies = [wire.overloaded()] * 3 + [Reply.sse(wire.clean())]
    run = await run_through(wire, replies, retries=3, backoff=BASE, rng=random.Random(SEED))
    assert "".join(e.delta for e in run.events) == "".join(TOKENS)
    check_spacing(run)


@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_chat_backoff_spacing_grows(wire: Wire) -> None:
    replies = [wire.overloaded()] * 3 + [wire.answer()]
    run = await run_through(wire, replies, streaming=False, retries=3, backoff=BASE, rng=random.Random(SEED))
    assert run.end.text == "".join(TOKENS)
    check_spacing(run)
