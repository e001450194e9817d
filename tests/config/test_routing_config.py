"""The object form of a ``models`` entry (balanced group + policy) and ``runtime.router.breaker``."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyroute import errors
from polyroute.config import build_router, load_settings

CONFIG = """
models:
  plain: [a:one, a:two]
  chat:
    deployments:
      - {model: "a:small", weight: 90, rpm: 600, tpm: 100000, inputPrice: 0.15, outputPrice: 0.6}
      - a:big
    fallbacks: plain
    sticky: true
    hedge: {percentile: 95, delay: 1.5, budget: 0.05}
    resume: true
    onContextLength: a:huge
    onContentFilter: next
  cheap:
    strategy: lowest-cost
    deployments: [a:x, a:y]
runtime:
  router:
    breaker: {failureThreshold: 3, cooldown: 12}
"""


def load(tmp_path: Path, text: str = CONFIG):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_settings(path, environ={})


def test_object_alias_becomes_a_plain_list_plus_a_policy(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.models["chat"] == ["a:small", "a:big", "plain"]  # readers of models see lists
    router = build_router(settings, {})
    policy = router.policies["chat"]
    assert policy.strategy == "weighted" and policy.sticky and policy.resume
    assert [(d.key, d.weight) for d in policy.deployments] == [("a:small", 90), ("a:big", 1)]
    hedge = policy.hedge
    assert hedge is not None and (hedge.percentile, hedge.delay, hedge.budget) == (95, 1.5, 0.05)
    assert (policy.on_context_length, policy.on_content_filter) == ("a:huge", "next")
    assert router.policies["cheap"].strategy == "lowest_cost"
    assert [str(r) for r in router.candidates("chat")] == ["a:small", "a:big", "a:one", "a:two"]
    state = router.deployments.get("a", "small")
    assert state.rpm is not None and state.tpm is not None and state.input_price == 0.15
    assert router.deployments.breaker is not None and router.deployments.breaker.failure_threshold == 3


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("models:\n  x:\n    strategy: fastest\n    deployments: [a:b]\n", "strategy"),
        ("models:\n  x:\n    deployments: [a:b]\n    hedge: {budget: 0.1}\n", "hedge"),
        ("models:\n  x:\n    deployments: [{model: a:b, weight: -1}]\n", "weight"),
        ("models:\n  x:\n    deployments: [a:b]\n    typo: 1\n", "typo"),
    ],
)
def test_bad_routing_config_names_the_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(errors.ConfigError, match=where):
        load(tmp_path, text)
