"""The "after the first token" faults over every wire with ``RoutingPolicy(resume=True)``.

The request names an alias ``chain`` = ``up:m`` (a real OpenAI / Gemini / Anthropic client
against the fake upstream) then ``b:m`` (the scripted fallback) with resume on. Every fault
that breaks the stream after two tokens must continue on ``b``: the caller gets the two
tokens from ``up``, then ``b``'s continuation, then ``end`` holding partial + continuation;
``b`` was sent the partial reply and the resume instruction; the attempts say so. The
generated docs table shows these as its "after the first token, resume on" column.
"""

from __future__ import annotations

import pytest

from fakes.fault_matrix import (
    CASES,
    FALLBACK_TOKENS,
    TIMEOUT,
    TOKENS,
    WIRE_IDS,
    WIRES,
    Case,
    Wire,
    describe,
    rows,
    run_through,
)
from polyroute import errors
from polyroute.router.streaming import RESUME_INSTRUCTION

AFTER = [c for c in CASES if c.phase == "after"]
EARLY = 0.01


@pytest.mark.parametrize("case", AFTER, ids=[c.fault for c in AFTER])
@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_resume_matrix(wire: Wire, case: Case) -> None:
    run = await run_through(wire, case.build(wire), resume=True)
    assert run.exc is None, describe(run)
    assert [e.type for e in run.events if e.type in ("error", "end")] == ["end"], describe(run)
    end = run.end
    tokens = [e for e in run.events if e.type == "token"]
    if case.resume == "passes":
        assert [e.delta for e in tokens] == TOKENS and run.fallback.calls == []
        assert rows(end.attempts) == [("up", "ok", None)]
        return
    assert case.resume == "resumes"
    expected = case.error_for(wire.name)
    partial = "".join(TOKENS[:2])
    # the two tokens from up, then b's continuation, then end
    assert [e.delta for e in tokens] == [*TOKENS[:2], *FALLBACK_TOKENS], describe(run)
    assert all(e.provider != "b" for e in tokens[:2]) and all(e.provider == "b" for e in tokens[2:])
    assert run.events[-1].type == "end" and end.provider == "b"
    assert end.message.content == partial + "".join(FALLBACK_TOKENS)
    # the attempts: up broke with the fault's class and says it resumes; b resumed
    assert rows(end.attempts) == [("up", "error", expected and expected.__name__), ("b", "resumed", None)]
    assert "resuming" in (end.attempts[0].note or ""), end.attempts[0]
    # b was sent the conversation, the partial reply and the instruction to continue it
    assert len(run.fallback.calls) == 1 and len(run.requests) == 1
    _, sent = run.fallback.calls[0]
    assert not isinstance(sent, list)
    messages = [(m.role, m.content) for m in sent.messages]
    assert messages == [("user", "hi"), ("assistant", partial), ("user", RESUME_INSTRUCTION)]
    if expected is errors.TimeoutError:
        second = run.times[next(i for i, e in enumerate(run.events) if e is tokens[1])]
        assert run.fallback.started[0] - second >= TIMEOUT - EARLY, "resumed before the idle timeout"
