"""Shared fixtures: a scriptable local upstream and a clean environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes.upstream import FakeUpstream  # noqa: E402

_PROVIDER_ENV = (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ENDPOINT", "GEMINI_API_KEY", "GOOGLE_API_KEY",
    "GEMINI_BASE_URL", "GEMINI_ENDPOINT", "GROQ_API_KEY", "GROQ_BASE_URL", "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL", "POLYROUTE_API_KEYS", "POLYROUTE_DATABASE_URL", "POLYROUTE_DATA_DIR",
)


@pytest.fixture(autouse=True)
def _clean_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit a developer's real keys or endpoints."""
    for name in _PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.endswith(("_API_KEY", "_BASE_URL")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def llamacpp_base_url() -> Iterator[str]:
    """A real llama-cpp-python OpenAI-compatible server running SmolLM2 (started once)."""
    from fakes.llamacpp_server import llamacpp_server, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with llamacpp_server() as base:
        yield base


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server
