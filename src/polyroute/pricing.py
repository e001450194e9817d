"""What a call cost: token usage times the prices configured for the model that served it.

Prices live in configuration (the ``pricing:`` section), in US dollars per million tokens,
because they change more often than code and differ per contract::

    pricing:
      openai:gpt-4o-mini: {input: 0.15, output: 0.60, cachedInput: 0.075}
      "anthropic:claude-3-5-*": {input: 3.0, output: 15.0, cachedInput: 0.30}
      gemini-2.0-flash: {input: 0.10, output: 0.40}     # any provider serving this model id

A key is looked up as the exact ``provider:model``, then the patterns (``*``/``?`` wildcards,
in the order written), then the bare model id. Usage is normalised by the providers so that
``prompt_tokens`` counts every input token, ``cached_tokens`` the part of them read from the
provider's cache, and ``completion_tokens`` every output token including reasoning; so the
cost is ``uncached input x input + cached x cachedInput + output x output``.

A cost is never guessed: an unpriced model gives ``None``, and so does a total that
includes any unpriced attempt that used tokens. This module prices; it does not route, and
the router does not call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol

from polyroute.errors import ConfigError
from polyroute.types import Usage

__all__ = ["Price", "PriceTable", "Priced", "load_prices"]

_PER = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(max(usage.cached_tokens, 0), max(usage.prompt_tokens, 0))
        uncached = max(usage.prompt_tokens, 0) - cached
        cached_price = self.input if self.cached_input is None else self.cached_input
        return (uncached * self.input + cached * cached_price + max(usage.completion_tokens, 0) * self.output) / _PER


class Priced(Protocol):
    """Anything that says who served it and what it used: a ChatResponse, an EmbeddingResponse..."""

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def usage(self) -> Usage: ...


UsageRecord = tuple[str, str, Usage]


def _price(key: str, value: Any) -> Price:
    if not isinstance(value, (Mapping, Price)):  # a PriceSettings, or another object with the fields
        value = {name: getattr(value, name, None) for name in ("input", "output", "cached_input")}
    if isinstance(value, Price):
        price = value
    else:
        cached = value.get("cached_input", value.get("cachedInput"))
        try:
            price = Price(float(value["input"]), float(value["output"]), None if cached is None else float(cached))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"pricing.{key}: needs numeric 'input' and 'output' prices (USD per 1M tokens)") from None
    if min(price.input, price.output, price.cached_input or 0.0) < 0:
        raise ConfigError(f"pricing.{key}: prices must not be negative")
    return price


class PriceTable:
    """Prices by ``provider:model``, pattern, or bare model id; see the module docstring."""

    def __init__(self, prices: Mapping[str, Price | Mapping[str, Any] | Any] | None = None) -> None:
        self._exact: dict[str, Price] = {}
        self._patterns: list[tuple[str, Price]] = []
        for key, value in (prices or {}).items():
            price = _price(key, value)
            if any(ch in key for ch in "*?["):
                self._patterns.append((key, price))
            else:
                self._exact[key] = price
        self._cache: dict[tuple[str, str], Price | None] = {}

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)

    def lookup(self, provider: str, model: str) -> Price | None:
        key = (provider, model)
        if key in self._cache:
            return self._cache[key]
        ref = f"{provider}:{model}"
        found = self._exact.get(ref)
        if found is None:
            found = next((price for pattern, price in self._patterns if fnmatchcase(ref, pattern)), None)
        if found is None:
            found = self._exact.get(model)
        self._cache[key] = found
        return found

    def cost_of(self, usage: Usage, provider: str, model: str) -> float | None:
        """USD for one call's ``usage`` on ``provider:model``, or None when that model is unpriced."""
        price = self.lookup(provider, model)
        return None if price is None else price.cost(usage)

    def total_cost(self, records: Iterable[UsageRecord | Priced]) -> float | None:
        """USD summed over every attempt of a call (a retried or resumed stream is paid twice).

        Each record is a ``(provider, model, usage)`` triple or a response object. Attempts
        that used no tokens cost nothing even when unpriced; any other unpriced attempt makes
        the total unknown (None), because a partial sum would understate the bill.
        """
        total = 0.0
        for record in records:
            if isinstance(record, tuple):
                provider, model, usage = record
            else:
                provider, model, usage = record.provider, record.model, record.usage
            cost = self.cost_of(usage, provider, model)
            if cost is None:
                if usage.prompt_tokens or usage.completion_tokens:
                    return None
                continue
            total += cost
        return total


def load_prices(settings: Any) -> PriceTable:
    """The price table of loaded :class:`~polyroute.config.schema.Settings` (its ``pricing``), or of a mapping."""
    prices = getattr(settings, "pricing", settings)
    if not isinstance(prices, Mapping):
        raise ConfigError("pricing: must map 'provider:model' to {input, output, cachedInput}")
    return PriceTable(prices)
