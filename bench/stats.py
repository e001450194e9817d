"""Small, dependency-free statistics for latency samples (nanoseconds in, milliseconds out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["added", "percentile", "ratio", "summary"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def summary(samples_ns: Sequence[int], *, errors: int = 0, wall_ns: int = 0) -> dict[str, Any]:
    """Median, p95, p99, mean and count of a latency sample, in milliseconds."""
    ms = [s / 1e6 for s in samples_ns]
    out: dict[str, Any] = {
        "n": len(ms),
        "errors": errors,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
    }
    if wall_ns:
        out["rps"] = len(ms) / (wall_ns / 1e9)
    return out


def added(system: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """What ``system`` adds over ``baseline``: difference of medians and of p99s, in microseconds."""
    return {
        "p50_us": (system["p50_ms"] - baseline["p50_ms"]) * 1000,
        "p99_us": (system["p99_ms"] - baseline["p99_ms"]) * 1000,
    }


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not a positive number."""
    if not denominator or denominator <= 0 or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator
