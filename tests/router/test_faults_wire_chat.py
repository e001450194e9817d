"""The fault matrix on plain calls: every fault that applies to ``router.chat`` over every wire.

Each case in :data:`fakes.fault_matrix.CASES` that carries a :class:`~fakes.fault_matrix.Plain`
variant is injected into a non-streaming call through the real OpenAI, Gemini and Anthropic
clients (per-candidate timeout ``provider_timeout`` = 1.5 s, no stream timeouts), with the
scripted fallback ``b`` behind them. The generated docs table shows these as its "plain call
(chat)" column.
"""

from __future__ import annotations

import pytest

from fakes.fault_matrix import (
    CASES,
    FALLBACK_TOKENS,
    OVER,
    RETRY_AFTER,
    TIMEOUT,
    TOKENS,
    WIRE_IDS,
    WIRES,
    Case,
    Run,
    Wire,
    describe,
    rows,
    run_through,
)
from polyroute import errors

PLAIN = [c for c in CASES if c.plain is not None]
EARLY = 0.01


@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_clean_answer_passes_through(wire: Wire) -> None:
    run = await run_through(wire, wire.answer(), streaming=False)
    assert run.end.text == "".join(TOKENS) and run.fallback.calls == []
    assert rows(run.attempts) == [("up", "ok", None)] and len(run.requests) == 1


@pytest.mark.parametrize("case", PLAIN, ids=[c.fault for c in PLAIN])
@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_plain_call_fault_matrix(wire: Wire, case: Case) -> None:
    plain = case.plain
    assert plain is not None
    name = plain.error.__name__ if plain.error is not None else None
    timed_out = plain.error is errors.TimeoutError
    run = await run_through(wire, plain.build(wire), streaming=False, retries=plain.retries, linger=timed_out)
    if plain.outcome == "passes":
        # (not ``reply.provider``: see the report; the attempts name the registration)
        assert run.end.text == "".join(TOKENS) and rows(run.attempts) == [("up", "ok", None)]
        assert run.fallback.calls == [] and len(run.requests) == 1
    elif plain.outcome == "falls back":
        _check_falls_back(run, name, timed_out)
    elif plain.outcome == "retries":
        reply = run.end
        assert reply.text == "".join(TOKENS) and run.fallback.calls == [] and len(run.requests) == 2
        assert rows(reply.attempts) == [("up", "error", name), ("up", "ok", None)]
        assert reply.attempts[1].retry == 1 and reply.attempts[1].waited >= RETRY_AFTER
        assert run.arrivals[1] - run.arrivals[0] >= RETRY_AFTER, "retried before Retry-After"
    else:
        assert plain.outcome == "fails"
        assert type(run.exc) is plain.error, run.exc
        assert run.fallback.calls == [] and len(run.requests) == 1, describe(run)
        assert rows(run.exc.attempts) == [("up", "error", name)]


def _check_falls_back(run: Run, name: str | None, timed_out: bool) -> None:
    reply = run.end
    assert reply.provider == "b" and reply.text == "".join(FALLBACK_TOKENS), describe(run)
    assert rows(reply.attempts) == [("up", "error", name), ("b", "ok", None)]
    assert len(run.requests) == 1 and len(run.fallback.calls) == 1, describe(run)
    if timed_out:
        begun = run.fallback.started[0]
        assert begun - run.started >= TIMEOUT - EARLY, "fell back before the candidate timeout"
        # the slow answer would have come OVER s after the request (the stall: later still)
        assert begun < run.arrivals[0] + OVER, "waited for the upstream instead of falling back"
        closed = run.requests[0].closed_at
        assert closed is not None and closed < run.arrivals[0] + OVER, "the timed-out connection was not closed"
