"""Per-alias routing policy: how to spread load, when to hedge or resume, where to go on which error.

A policy is attached to an alias (``router.add_alias(name, models, policy=...)`` or
``router.set_policy``). The alias's list still says *which* candidates exist and in what
fallback order; the policy says how to order the balanced group at the head of that list
and how to react to errors that plain fallback handles badly (a context window too small
is not fixed by retrying the same model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from polyroute.types import ModelRef, ModelSpec

__all__ = ["Deployment", "ErrorRoute", "HedgePolicy", "RoutingPolicy", "Strategy"]

Strategy = Literal["ordered", "weighted", "lowest_latency", "least_in_flight", "lowest_cost"]
#: ``"stop"`` (raise), ``"next"`` (the next candidate), or a model reference / alias to try next
ErrorRoute = str


@dataclass(frozen=True, slots=True)
class Deployment:
    """One member of a balanced group: a model plus its share, prices and our-side limits."""

    model: ModelSpec
    #: relative share for the ``weighted`` strategy (90 and 10 is a 90/10 split)
    weight: float = 1.0
    #: price per million input / output tokens, for ``lowest_cost``
    input_price: float | None = None
    output_price: float | None = None
    #: requests and tokens per minute we allow ourselves to send (None: no limit)
    rpm: int | None = None
    tpm: int | None = None
    #: the model's known limits, in tokens (reported by ``polyroute check``)
    context_window: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.weight < 0 or not math.isfinite(self.weight):
            raise ValueError(f"deployment {self.model} weight must be a finite number >= 0")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"deployment {self.model} {name} must be at least 1")

    @property
    def key(self) -> str:
        return str(self.model).strip()


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """Start the next candidate in parallel when the first is slow to produce anything.

    The delay is a fixed number of seconds, or the ``percentile`` of the first candidate's
    recent time to first token (streams) / total latency (chat) once ``min_samples`` exist;
    with too few samples the fixed ``delay`` applies, and with neither nothing is hedged.
    ``budget`` caps the share of calls that may hedge (0.1: at most about one in ten).
    """

    delay: float | None = None
    percentile: float | None = None
    min_samples: int = 20
    min_delay: float = 0.0
    budget: float = 0.1
    #: credit that may pile up while nothing hedges (how big a burst of hedges may be)
    burst: float = 5.0

    def __post_init__(self) -> None:
        if self.delay is None and self.percentile is None:
            raise ValueError("a hedge policy needs a 'delay' or a 'percentile'")
        if self.percentile is not None and not 0 < self.percentile < 100:
            raise ValueError("hedge percentile must be in (0, 100)")
        if self.delay is not None and self.delay < 0:
            raise ValueError("hedge delay must be >= 0")
        if not 0 <= self.budget <= 1 or self.burst < 1:
            raise ValueError("hedge budget must be in [0, 1] and burst at least 1")


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """How one alias routes. The default is plain ordered fallback, as with no policy."""

    strategy: Strategy = "ordered"
    #: the balanced group (with weights, prices, limits); empty: the whole alias list
    deployments: tuple[Deployment, ...] = ()
    #: ``weighted``: the same ``metadata["session_id"]`` always starts on the same deployment
    sticky: bool = False
    hedge: HedgePolicy | None = None
    #: continue a broken stream on the next candidate from the partial text (never in a tool call)
    resume: bool = False
    on_context_length: ErrorRoute = "stop"
    on_content_filter: ErrorRoute = "stop"
    #: where this policy came from, for messages
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for route in (self.on_context_length, self.on_content_filter):
            if route not in ("stop", "next") and not route.strip():
                raise ValueError("an error route must be 'stop', 'next' or a model reference")

    def weight_of(self, spec: ModelSpec) -> float:
        key = str(spec).strip()
        for d in self.deployments:
            if d.key == key:
                return d.weight
        return 1.0 if not self.deployments else 0.0

    def group(self, entries: list[ModelSpec]) -> tuple[list[ModelSpec], list[ModelSpec]]:
        """Split an alias's entries into (the balanced group, the ordered fallbacks after it)."""
        if self.strategy == "ordered":
            return [], entries
        if not self.deployments:
            return list(entries), []
        keys = {d.key for d in self.deployments}
        head = [e for e in entries if str(e).strip() in keys]
        tail = [e for e in entries if str(e).strip() not in keys]
        return head, tail


DEFAULT_POLICY = RoutingPolicy()


def ref_key(spec: ModelSpec) -> tuple[str, str] | None:
    """(provider, model_id) for a concrete reference; None for an alias name."""
    if isinstance(spec, ModelRef):
        return spec.provider, spec.model_id
    provider, sep, model_id = spec.strip().partition(":")
    return (provider, model_id) if sep else None
