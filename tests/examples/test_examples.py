"""The guide's two examples, run as scripts against local fakes of OpenAI and Gemini."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.gemini_server import GeminiFake
from fakes.openai_server import OpenAIFake, error_reply
from fakes.upstream import FakeUpstream

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def gemini() -> Iterator[FakeUpstream]:
    with FakeUpstream(GeminiFake(api_key="g-key")) as up:
        yield up


def run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, env={**base, **env}, timeout=60
    )


def test_fallback_example_answers_from_gemini_when_openai_is_down(gemini: FakeUpstream) -> None:
    with FakeUpstream(lambda req: error_reply(503, "overloaded", "server_error")) as openai_down:
        result = run("fallback_chat.py", {
            "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": f"{openai_down.url}/v1",
            "GEMINI_API_KEY": "g-key", "GEMINI_BASE_URL": gemini.url,
        })
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gemini Recommend a cheap, fast model")  # the fake echoes the prompt
    assert "openai:gpt-4o-mini error ProviderUnavailableError" in result.stderr


def test_stream_example_prints_tokens_as_they_arrive() -> None:
    with FakeUpstream(OpenAIFake(api_key="sk-test")) as openai:
        result = run("stream_greeting.py", {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": f"{openai.url}/v1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from the fake.\n"
    assert "(answered by openai)" in result.stderr


def test_fallback_example_without_keys_lists_every_attempt() -> None:
    result = run("fallback_chat.py", {})
    assert result.returncode == 1
    assert "OPENAI_API_KEY" in result.stderr and "GEMINI_API_KEY" in result.stderr
