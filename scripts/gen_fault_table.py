"""Write the fault table of docs/resilience.md from the tested matrix (``--check``: fail if stale).

The table is never edited by hand. Its rows are ``CASES`` in
``tests/router/test_faults_wire.py``, the same structure the parametrized tests iterate, so
every documented behaviour is one that a test asserts on every wire format. Only the part
between the marker comments is rewritten; the prose around it is left alone. A test runs
the same check, like ``scripts/gen_provider_docs.py`` for docs/providers.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "resilience.md"
MATRIX = ROOT / "tests" / "router" / "test_faults_wire.py"
START = "<!-- fault-table:start -->"
END = "<!-- fault-table:end -->"


def _matrix() -> ModuleType:
    """The test module, imported by path (it imports the test fakes from ``tests/``)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    spec = importlib.util.spec_from_file_location("polyroute_fault_matrix", MATRIX)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def behaviour(outcome: str, error: type[Exception] | None) -> str:
    name = f"`{error.__name__}`" if error is not None else ""
    return {
        "falls back": f"fallback answers; the attempt records {name}",
        "error after tokens": f"`token, token, error`, then {name} is raised; fallback not called",
        "fails": f"{name} raised at once; fallback not called",
        "retries": f"waits at least Retry-After, then the same candidate answers (first attempt {name})",
        "passes": "every token, then `end`; fallback not called",
    }[outcome]


def render(cases: Sequence[Any], wires: Sequence[str]) -> str:
    """The markdown table: one row per fault and wire, one column per phase."""
    lines = [
        "| fault | wire | before the first token | after the first token |",
        "|---|---|---|---|",
    ]
    faults = list(dict.fromkeys(case.fault for case in cases))
    for fault in faults:
        for wire in wires:
            cells = {"before": "-", "after": "-"}
            for case in cases:
                if case.fault == fault:
                    cells[case.phase] = behaviour(case.outcome, case.error_for(wire))
            lines.append(f"| {fault} | {wire} | {cells['before']} | {cells['after']} |")
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
