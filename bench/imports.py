"""Import cost: each library imported in a fresh interpreter, N times, median reported.

Timed inside the child from just before the import statement to just after it (the
interpreter's own start-up is the same for everyone and is left out), together with the
RSS the import added. Every child runs with a warm OS file cache: the first, cold, run is
discarded.
"""

from __future__ import annotations

import os
import statistics
import subprocess
from collections.abc import Callable
from typing import Any

import orjson

from bench import procs

__all__ = ["IMPORTS", "measure_imports"]

#: label -> import statement
IMPORTS: dict[str, str] = {
    "polyroute": "import polyroute",
    "polyroute + OpenAIProvider": "import polyroute; from polyroute.providers.openai import OpenAIProvider",
    "polyroute.runtime (server)": "import polyroute.runtime",
    "litellm": "import litellm",
    "agno (Agent + AgentOS)": "from agno.agent import Agent; from agno.os import AgentOS",
}

_PROBE = """
import time, resource
def rss():
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
before = rss()
t0 = time.perf_counter()
{stmt}
t1 = time.perf_counter()
import json
print('@@import ' + json.dumps({{'seconds': t1 - t0, 'rss_added': rss() - before, 'rss': rss()}}))
"""


def _once(stmt: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "AGNO_TELEMETRY": "false",
    }
    out = subprocess.run(
        [procs.PYTHON, "-c", _PROBE.format(stmt=stmt)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("@@import "):
            result: dict[str, Any] = orjson.loads(line[len("@@import ") :])
            return result
    raise RuntimeError(f"{stmt!r} failed: {out.stderr[-800:]}")


def measure_imports(runs: int, progress: Callable[[str], None], labels: list[str] | None = None) -> dict[str, Any]:
    """``{label: {median_ms, min_ms, rss_added_mb, runs}}`` or ``{label: {error}}``."""
    results: dict[str, Any] = {}
    for label in labels or list(IMPORTS):
        stmt = IMPORTS[label]
        try:
            _once(stmt)  # warm the file cache
            samples = [_once(stmt) for _ in range(runs)]
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            results[label] = {"error": str(exc)[:500]}
            progress(f"import {label}: failed")
            continue
        seconds = [s["seconds"] for s in samples]
        results[label] = {
            "median_ms": statistics.median(seconds) * 1000,
            "min_ms": min(seconds) * 1000,
            "rss_added_mb": statistics.median(s["rss_added"] for s in samples) / 1e6,
            "rss_mb": statistics.median(s["rss"] for s in samples) / 1e6,
            "runs": runs,
        }
        progress(f"import {label}: {results[label]['median_ms']:.0f} ms, +{results[label]['rss_added_mb']:.0f} MB")
    return results
