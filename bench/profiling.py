"""Sampling a running server with py-spy while wrk drives it, and summarising where time goes.

py-spy attaches from outside (no code in the server changes), so the profile is of the real
``polyroute serve`` under load. The collapsed stacks are reduced to three tables: time by
package of the innermost Python frame (how much is polyroute's own code versus httpx2,
Starlette, uvicorn, asyncio...), the functions with the most self time, and the functions
with the most inclusive time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

__all__ = ["available", "record", "summarise"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PACKAGES = (
    "polyroute",
    "httpx2",
    "httpcore2",
    "h11",
    "anyio",
    "starlette",
    "uvicorn",
    "pydantic",
    "orjson",
    "sqlalchemy",
    "aiosqlite",
    "asyncio",
    "uvloop",
    "httptools",
    "sniffio",
    "idna",
    "json",
    "logging",
    "contextlib",
)


def available() -> str | None:
    """The py-spy binary (the venv's first, as ``pip install py-spy`` puts it there), or None."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 500) -> Path | None:
    """Record ``pid`` for ``seconds`` into ``out`` (collapsed stacks); None when py-spy cannot attach."""
    spy = available()
    if spy is None:
        return None
    argv = [
        spy,
        "record",
        "-p",
        str(pid),
        "-d",
        str(max(1, round(seconds))),
        "-r",
        str(rate),
        "-f",
        "raw",
        "-o",
        str(out),
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    return out if res.returncode == 0 and out.exists() else None


def record_during(pid: int, seconds: float, out: Path) -> threading.Thread:
    """Start :func:`record` in a thread (so the caller can drive load meanwhile); join it after."""
    thread = threading.Thread(target=record, args=(pid, seconds, out), daemon=True)
    thread.start()
    return thread


def _package(file: str) -> str:
    parts = re.split(r"[/\\]", file)
    for pkg in _PACKAGES:
        if pkg in parts or file.startswith(pkg):
            return pkg
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    return parts[-2] if len(parts) > 1 else file


def _parse(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), ""
    file = m.group("file")
    short = "/".join(file.split("/")[-2:])
    return f"{m.group('func')} ({short})", file


def summarise(collapsed: Path, top: int = 25) -> str:
    """Text tables (package share, top self, top inclusive) from py-spy's raw output."""
    self_time: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    by_pkg: Counter[str] = Counter()
    polyroute_incl: Counter[str] = Counter()
    total = 0
    other_threads = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f]
        parsed = [_parse(f) for f in frames]
        # skip the process/thread header frames py-spy may add
        parsed = [p for p in parsed if p[1]]
        if not parsed:
            continue
        if parsed[0][1].endswith("threading.py") and "_bootstrap" in parsed[0][0]:
            # a worker thread (aiosqlite's, a thread pool's): mostly blocked waiting, which py-spy
            # cannot always tell from running; the event loop's thread is what serves requests
            other_threads += count
            continue
        total += count
        leaf_name, leaf_file = parsed[-1]
        self_time[leaf_name] += count
        by_pkg[_package(leaf_file)] += count
        seen: set[str] = set()
        for name, file in parsed:
            if name not in seen:
                seen.add(name)
                incl[name] += count
                if "polyroute" in file.split("/"):
                    polyroute_incl[name] += count
    if not total:
        return "no samples\n"

    def table(title: str, counter: Counter[str]) -> str:
        rows = [f"{title}", "-" * len(title)]
        rows += [f"{n / total * 100:6.1f} %  {name}" for name, n in counter.most_common(top)]
        return "\n".join(rows) + "\n"

    return (
        f"{total} samples of the event loop's thread ({other_threads} of other threads left out)\n\n"
        + table("share of samples by package of the innermost frame", by_pkg)
        + "\n"
        + table("top self time (innermost frame)", self_time)
        + "\n"
        + table("top inclusive time", incl)
        + "\n"
        + table("polyroute functions, inclusive", polyroute_incl)
    )
