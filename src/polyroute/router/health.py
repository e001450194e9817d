"""Latency statistics per deployment, and the health snapshot the router reports.

The snapshot is plain dataclasses with ``to_dict()`` (camelCase keys, milliseconds) so the
CLI prints it and the runtime serves it as ``GET /v1/router/health`` without either one
knowing how the router keeps its books.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeploymentHealth", "LatencyStats", "RouterHealth"]


class LatencyStats:
    """An exponentially weighted moving average plus the last ``size`` samples.

    The average reacts to a trend at O(1) per sample; the ring of samples gives medians and
    percentiles (hedging delays) when asked, sorting only then.
    """

    __slots__ = ("alpha", "ewma", "samples")

    def __init__(self, alpha: float = 0.2, size: int = 64) -> None:
        self.alpha = alpha
        self.ewma: float | None = None
        self.samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        ewma = self.ewma
        self.ewma = seconds if ewma is None else ewma + self.alpha * (seconds - ewma)
        self.samples.append(seconds)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100, nearest rank) of the recent samples, or None."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
        return ordered[rank]

    def __len__(self) -> int:
        return len(self.samples)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@dataclass(frozen=True, slots=True)
class DeploymentHealth:
    """One deployment (provider + model + key) as the router sees it right now."""

    provider: str
    model: str
    #: a short hash of the deployment's key (never the key), None when it has none
    key_id: str | None
    #: closed | open | half_open | auth_failed
    state: str
    #: seconds until an open circuit lets a probe through
    retry_in: float
    consecutive_failures: int
    #: failed share of the calls in the breaker's window, and how many calls that was
    error_rate: float
    window_calls: int
    calls: int
    failures: int
    in_flight: int
    latency_ewma: float | None
    latency_p50: float | None
    ttft_ewma: float | None
    ttft_p50: float | None
    last_error: str | None
    #: how many times the circuit opened since start
    opened: int
    #: what other replicas said through shared state: open | half_open | auth_failed (None: nothing)
    remote_state: str | None = None
    #: seconds until a circuit another replica opened may be probed
    remote_retry_in: float = 0.0

    @property
    def callable(self) -> bool:
        """Would a call be sent here now (or a probe, once its lease is won)?"""
        return self.state in ("closed", "half_open") and self.remote_state not in ("open", "auth_failed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "keyId": self.key_id,
            "state": self.state,
            "retryInMs": _ms(self.retry_in),
            "consecutiveFailures": self.consecutive_failures,
            "errorRate": round(self.error_rate, 4),
            "windowCalls": self.window_calls,
            "calls": self.calls,
            "failures": self.failures,
            "inFlight": self.in_flight,
            "latencyEwmaMs": _ms(self.latency_ewma),
            "latencyP50Ms": _ms(self.latency_p50),
            "ttftEwmaMs": _ms(self.ttft_ewma),
            "ttftP50Ms": _ms(self.ttft_p50),
            "lastError": self.last_error,
            "opened": self.opened,
            "remoteState": self.remote_state,
            "remoteRetryInMs": _ms(self.remote_retry_in),
        }


@dataclass(frozen=True, slots=True)
class RouterHealth:
    """Every known deployment, plus the router-wide concurrency gauge."""

    in_flight: int
    max_concurrency: int
    waiting: int
    deployments: list[DeploymentHealth] = field(default_factory=list)
    #: None without shared state; else ``idle`` / ``ok`` / ``degraded`` (Redis unavailable: local limits)
    shared_state: str | None = None

    @property
    def healthy(self) -> bool:
        """True when at least one deployment would accept a call (or none is known yet)."""
        return not self.deployments or any(d.callable for d in self.deployments)

    def to_dict(self) -> dict[str, Any]:
        body = {
            "healthy": self.healthy,
            "inFlight": self.in_flight,
            "maxConcurrency": self.max_concurrency,
            "waiting": self.waiting,
            "deployments": [d.to_dict() for d in self.deployments],
        }
        if self.shared_state is not None:
            body["sharedState"] = self.shared_state
        return body
