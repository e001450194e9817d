"""polyroute.pricing: cost per call from configured prices, summed over attempts."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyroute import errors
from polyroute.config import load_settings
from polyroute.pricing import Price, PriceTable, load_prices
from polyroute.types import ChatResponse, EmbeddingResponse, Message, Usage

YAML = """
pricing:
  openai:gpt-4o-mini: {input: 0.15, output: 0.60, cachedInput: 0.075}
  "anthropic:claude-3-5-*": {input: 3.0, output: 15.0, cached_input: 0.30}
  "*:llama-3.3-70b*": {input: 0.59, output: 0.79}
  gemini-2.0-flash: {input: 0.10, output: 0.40}
"""


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )


@pytest.fixture
def table(tmp_path: Path) -> PriceTable:
    config = tmp_path / "polyroute.yaml"
    config.write_text(YAML)
    return load_prices(load_settings(config, environ={}))


def test_prices_load_from_the_config_file(table: PriceTable) -> None:
    assert len(table) == 4
    assert table.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.60, 0.075)


def test_cost_splits_cached_and_uncached_input(table: PriceTable) -> None:
    # 1M prompt tokens of which 400k cached, 100k output (reasoning included in output)
    cost = table.cost_of(usage(1_000_000, 100_000, cached=400_000, reasoning=50_000), "openai", "gpt-4o-mini")
    assert cost == pytest.approx(0.6 * 0.15 + 0.4 * 0.075 + 0.1 * 0.60)


def test_lookup_order_exact_then_pattern_then_bare_model(table: PriceTable) -> None:
    assert table.lookup("anthropic", "claude-3-5-sonnet-20241022") == Price(3.0, 15.0, 0.30)
    assert table.lookup("groq", "llama-3.3-70b-versatile") == Price(0.59, 0.79)
    assert table.lookup("vertex", "gemini-2.0-flash") == Price(0.10, 0.40)  # bare id: any provider
    assert table.lookup("openai", "gpt-4o") is None
    exact_wins = PriceTable({"*:m": {"input": 1, "output": 1}, "p:m": {"input": 2, "output": 2}, "m": Price(3, 3)})
    assert exact_wins.lookup("p", "m") == Price(2.0, 2.0)
    assert exact_wins.lookup("q", "m") == Price(1.0, 1.0)


def test_cached_price_defaults_to_input_price(table: PriceTable) -> None:
    assert table.cost_of(usage(1_000_000, 0, cached=1_000_000), "x", "gemini-2.0-flash") == pytest.approx(0.10)


def test_unpriced_model_has_no_cost(table: PriceTable) -> None:
    assert table.cost_of(usage(10, 10), "openai", "unknown-model") is None


def test_total_cost_sums_every_attempt(table: PriceTable) -> None:
    broken = ("anthropic", "claude-3-5-haiku", usage(2000, 300))  # a stream that failed mid-way
    resumed = ChatResponse(
        message=Message.assistant("ok"), provider="openai", model="gpt-4o-mini", usage=usage(2000, 500)
    )
    expected = (2000 * 3.0 + 300 * 15.0) / 1e6 + (2000 * 0.15 + 500 * 0.60) / 1e6
    assert table.total_cost([broken, resumed]) == pytest.approx(expected)
    embedding = EmbeddingResponse(vectors=[[0.0]], provider="x", model="gemini-2.0-flash", usage=usage(1000, 0))
    assert table.total_cost([embedding]) == pytest.approx(1000 * 0.10 / 1e6)


def test_total_is_unknown_when_an_attempt_that_used_tokens_is_unpriced(table: PriceTable) -> None:
    failed_fast = ("mystery", "model", usage(0, 0))  # rejected before using tokens: costs nothing
    assert table.total_cost([failed_fast, ("openai", "gpt-4o-mini", usage(1000, 0))]) == pytest.approx(0.00015)
    assert table.total_cost([("mystery", "model", usage(5, 0)), ("openai", "gpt-4o-mini", usage(1, 1))]) is None
    assert table.total_cost([]) == 0.0


def test_bad_prices_are_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("pricing:\n  m: {input: -1, output: 2}\n")
    with pytest.raises(errors.ConfigError, match="pricing"):
        load_settings(config, environ={})
    with pytest.raises(errors.ConfigError, match="numeric"):
        PriceTable({"m": {"input": "cheap", "output": 1}})
    with pytest.raises(errors.ConfigError, match="negative"):
        PriceTable({"m": Price(1.0, -2.0)})
    with pytest.raises(errors.ConfigError):
        load_prices(["not", "a", "mapping"])
