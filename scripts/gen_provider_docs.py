"""Write docs/providers.md from the provider classes (``--check``: fail if it is out of date).

The file is generated, never edited by hand: the matrix comes from
:func:`polyroute.providers.catalog.render_markdown`, which reads only the code. A test runs
the same check, so a provider whose capabilities or variables change without regenerating
the docs fails CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polyroute.providers.catalog import render_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs" / "providers.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the generator output")
    parser.add_argument("--output", type=Path, default=DOCS, help=f"where to write (default: {DOCS})")
    args = parser.parse_args(argv)
    text = render_markdown()
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is out of date: run python scripts/gen_provider_docs.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
