"""The stream fault matrix over real wire formats: fault x wire x before/after the first token.

The cases live in :mod:`fakes.fault_matrix` (``CASES``, the single source shared with the
resume and plain-call matrices and with ``scripts/gen_fault_table.py``). This module runs
every case as a stream and checks what the router did and when: a 400 or a bad key is sent
exactly once even with retries on, a 429 is retried no sooner than its Retry-After, a slow
first token falls back after the first-token timeout (and well before the upstream's own
pause ends, its connection closed), and an error after output comes after the tokens (for a
stall, no sooner than the idle timeout after the last token). It also checks that the
documented table is exactly the generator's output.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from fakes.fault_matrix import (
    CASES,
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
from fakes.upstream import Reply
from polyroute import errors

ROOT = Path(__file__).resolve().parents[2]
#: asyncio may fire a timer up to its clock resolution early; timings allow for that, no more
EARLY = 0.01


def _check_passes(run: Run) -> None:
    reply = run.end
    assert "".join(e.delta for e in run.events) == "".join(TOKENS) and reply.provider == "up"
    assert run.fallback.calls == [] and len(run.requests) == 1


def _check_falls_back(case: Case, run: Run, expected: str | None) -> None:
    reply = run.end
    assert {e.provider for e in run.events} == {"b"} and len(run.fallback.calls) == 1, describe(run)
    assert rows(reply.attempts) == [("up", "error", expected), ("b", "ok", None)]
    # sent exactly once: nothing here is retried without retries on, and a bad key not even with them
    assert len(run.requests) == 1, describe(run)
    if case.fault == "slow first token":
        assert "first token" in (reply.attempts[0].message or "")
        begun = run.fallback.started[0]
        assert begun - run.started >= TIMEOUT - EARLY, "fell back before the first-token timeout"
        pause_ends = run.arrivals[0] + OVER
        assert begun < pause_ends, "waited for the upstream instead of falling back"
        closed = run.requests[0].closed_at
        assert closed is not None and closed < pause_ends, "the abandoned upstream connection was not closed"


def _check_retries(run: Run, expected: str | None) -> None:
    reply = run.end
    assert reply.provider == "up" and run.fallback.calls == [] and len(run.requests) == 2
    first, second = reply.attempts
    assert (first.outcome, first.error) == ("error", expected)
    assert (second.outcome, second.retry) == ("ok", 1) and second.waited >= RETRY_AFTER
    assert run.arrivals[1] - run.arrivals[0] >= RETRY_AFTER, "retried before Retry-After"


def _check_fails(run: Run, expected: type[errors.PolyrouteError] | None) -> None:
    assert type(run.exc) is expected, run.exc
    assert run.events == [] and run.fallback.calls == []
    assert len(run.requests) == 1, f"a {expected} must be sent exactly once, even with retries on"
    assert rows(run.exc.attempts) == [("up", "error", expected.__name__ if expected else None)]


def _check_error_after_tokens(run: Run, expected: type[errors.PolyrouteError] | None) -> None:
    assert type(run.exc) is expected, run.exc
    assert [e.type for e in run.events] == ["token", "token", "error"]
    assert "".join(e.delta for e in run.events) == "".join(TOKENS[:2])
    assert run.events[-1].error is run.exc and run.fallback.calls == []
    assert [(a.provider, a.outcome) for a in run.exc.attempts] == [("up", "error")]
    second, failed = run.times[1], run.times[2]
    assert run.times == sorted(run.times)
    if expected is errors.TimeoutError:
        assert isinstance(run.exc, errors.TimeoutError) and run.exc.kind == "idle"
        assert failed - second >= TIMEOUT - EARLY, "the idle timeout fired early"


async def check_case(case: Case, wire: Wire) -> None:
    """Run ``case`` on ``wire`` as a stream and assert its outcome (shared by every row)."""
    expected = case.error_for(wire.name)
    name = expected.__name__ if expected is not None else None
    linger = case.fault == "slow first token"
    run = await run_through(wire, case.build(wire), retries=case.retries, linger=linger)
    if case.outcome == "passes":
        _check_passes(run)
    elif case.outcome == "falls back":
        _check_falls_back(case, run, name)
    elif case.outcome == "retries":
        _check_retries(run, name)
    elif case.outcome == "fails":
        _check_fails(run, expected)
    else:
        assert case.outcome == "error after tokens"
        _check_error_after_tokens(run, expected)


@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_clean_stream_passes_through(wire: Wire) -> None:
    run = await run_through(wire, Reply.sse(wire.clean()))
    _check_passes(run)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("wire", WIRES, ids=WIRE_IDS)
async def test_fault_matrix(wire: Wire, case: Case) -> None:
    await check_case(case, wire)


def test_every_documented_fault_is_covered_for_every_wire_in_the_phases_it_can_happen() -> None:
    phases: dict[str, set[str]] = {}
    for case in CASES:
        phases.setdefault(case.fault, set()).add(case.phase)
    streaming = ["disconnect", "truncated", "malformed chunk", "error event inside the stream", "slow trickle"]
    for name in streaming:
        assert any(f.startswith(name) and p == {"before", "after"} for f, p in phases.items()), name
    assert len({c.id for c in CASES}) == len(CASES)
    # the faults that must never be retried run with retries on, so "sent once" means something
    for case in CASES:
        if case.outcome == "fails" or case.error is errors.AuthenticationError:
            assert case.retries > 0 and case.plain is not None and case.plain.retries > 0, case.id


def test_every_row_has_its_resume_and_plain_call_behaviour() -> None:
    for case in CASES:
        assert (case.resume is not None) == (case.phase == "after"), case.id
    plain = [c.fault for c in CASES if c.plain is not None]
    assert len(plain) == len(set(plain)), "one plain-call variant per fault"
    assert set(plain) == {c.fault for c in CASES} - {"slow trickle, gaps over the idle timeout"}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_fault_table", ROOT / "scripts" / "gen_fault_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_fault_table_is_up_to_date() -> None:
    """Fails when the matrix changed and ``python scripts/gen_fault_table.py`` was not rerun."""
    gen = generator()
    doc = (ROOT / "docs" / "resilience.md").read_text(encoding="utf-8")
    assert gen.render(CASES, WIRE_IDS) in doc
    assert gen.main(["--check"]) == 0


def test_generated_table_has_a_column_per_dimension() -> None:
    header = generator().render(CASES, WIRE_IDS).splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == [
        "fault",
        "wire",
        "before the first token",
        "after the first token",
        "after the first token, resume on",
        "plain call (chat)",
    ]


def test_generator_check_fails_on_drift_and_rewrites_only_the_table(tmp_path: Path) -> None:
    gen = generator()
    doc = tmp_path / "r.md"
    doc.write_text(f"# intro\n\n{gen.START}\n| stale |\n{gen.END}\n\nafter\n", encoding="utf-8")
    assert gen.main(["--check", "--output", str(doc)]) == 1
    assert gen.main(["--output", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# intro\n\n") and text.endswith("\n\nafter\n") and "| stale |" not in text
    assert gen.render(CASES, WIRE_IDS) in text
    assert gen.main(["--check", "--output", str(doc)]) == 0
    doc.write_text("no markers here\n", encoding="utf-8")
    assert gen.main(["--output", str(doc)]) == 2
