"""Write the fault table of docs/resilience.md from the tested matrix (``--check``: fail if stale).

The table is never edited by hand. Its rows are ``CASES`` in ``tests/fakes/fault_matrix.py``,
the same structure the parametrized tests iterate (``tests/router/test_faults_wire.py`` for
streams, ``test_faults_wire_resume.py`` with resume on, ``test_faults_wire_chat.py`` for plain
calls), so every documented behaviour is one that a test asserts on every wire format. Only the part
between the marker comments is rewritten; the prose around it is left alone. A test runs
the same check, like ``scripts/gen_provider_docs.py`` for docs/providers.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "resilience.md"
MATRIX = "fakes.fault_matrix"  # tests/fakes/fault_matrix.py
START = "<!-- fault-table:start -->"
END = "<!-- fault-table:end -->"


def _matrix() -> ModuleType:
    """The matrix module (it imports the test fakes from ``tests/``)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module(MATRIX)


def behaviour(outcome: str, error: type[Exception] | None, *, retries: int = 0, plain: bool = False) -> str:
    """One cell: what the caller sees for ``outcome`` (``retries``: the run had retries on)."""
    name = f"`{error.__name__}`" if error is not None else ""
    once = " after a single request (retries on)" if retries and outcome in ("falls back", "fails") else ""
    return {
        "falls back": f"fallback answers{once}; the attempt records {name}",
        "error after tokens": f"`token, token, error`, then {name} is raised; fallback not called",
        "fails": f"{name} raised at once{once}; fallback not called",
        "retries": f"waits at least Retry-After, then the same candidate answers (first attempt {name})",
        "passes": "the answer; fallback not called" if plain else "every token, then `end`; fallback not called",
        "resumes": (
            f"`token, token`, then the fallback continues from the partial text, then `end` holding both; "
            f"the attempts record {name} and `resumed`"
        ),
    }[outcome]


COLUMNS = ("before the first token", "after the first token", "after the first token, resume on", "plain call (chat)")


def render(cases: Sequence[Any], wires: Sequence[str]) -> str:
    """The markdown table: one row per fault and wire; streamed before / after the first token,
    after it with resume on, and the same fault on a plain call."""
    lines = ["| fault | wire | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    faults = list(dict.fromkeys(case.fault for case in cases))
    for fault in faults:
        for wire in wires:
            cells = dict.fromkeys(COLUMNS, "-")
            for case in cases:
                if case.fault != fault:
                    continue
                error = case.error_for(wire)
                column = COLUMNS[0] if case.phase == "before" else COLUMNS[1]
                cells[column] = behaviour(case.outcome, error, retries=case.retries)
                if case.resume is not None:
                    cells[COLUMNS[2]] = behaviour(case.resume, error)
                if case.plain is not None:
                    p = case.plain
                    said = behaviour(p.outcome, p.error, retries=p.retries, plain=True)
                    cells[COLUMNS[3]] = f"{p.what}: {said}" if p.what else said
            lines.append(f"| {fault} | {wire} | " + " | ".join(cells[c] for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def splice(document: str, table: str) -> str | None:
    """``document`` with the text between the markers replaced by ``table`` (None: no markers)."""
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        return None
    return f"{document[: start + len(START)]}\n{table}{document[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the table differs from the generator output")
    parser.add_argument("--output", type=Path, default=DOCS, help=f"the document holding the markers (default: {DOCS})")
    args = parser.parse_args(argv)
    matrix = _matrix()
    current = args.output.read_text(encoding="utf-8")
    text = splice(current, render(matrix.CASES, matrix.WIRE_IDS))
    if text is None:
        print(f"{args.output}: no {START} ... {END} markers", file=sys.stderr)
        return 2
    if current == text:
        return 0
    if args.check:
        print(f"{args.output} is out of date: run python scripts/gen_fault_table.py", file=sys.stderr)
        return 1
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
