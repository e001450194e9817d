"""The ``polyroute`` command against local fakes of OpenAI and Gemini (in-process runner)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakes.gemini_server import GeminiFake
from fakes.openai_server import OpenAIFake, error_reply
from fakes.upstream import FakeUpstream
from polyroute.cli import app

runner = CliRunner()


@pytest.fixture
def openai_down() -> Iterator[FakeUpstream]:
    with FakeUpstream(lambda req: error_reply(503, "The server is overloaded", "server_error")) as up:
        yield up


@pytest.fixture
def gemini_up() -> Iterator[FakeUpstream]:
    with FakeUpstream(GeminiFake(api_key="g-key")) as up:
        yield up


def config(tmp_path: Path) -> Path:
    path = tmp_path / "polyroute.yaml"
    path.write_text(
        "providers:\n"
        "  openai:\n    apiKey: ${OPENAI_API_KEY}\n    endpoint: ${OPENAI_BASE_URL}\n"
        "  gemini:\n    apiKey: ${GEMINI_API_KEY}\n    endpoint: ${GEMINI_BASE_URL}\n"
        "  spare:\n    kind: openai\n    enabled: false\n"
        "models:\n  default: [openai:gpt-4o-mini, gemini:gemini-2.0-flash]\n"
    )
    return path


def run(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--config", str(config(tmp_path)), "--env-file", str(tmp_path / "none")], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_chat_falls_back_and_says_who_answered(tmp_path: Path, openai_down: FakeUpstream, gemini_up: FakeUpstream) -> None:
    env = {
        "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": f"{openai_down.url}/v1",
        "GEMINI_API_KEY": "g-key", "GEMINI_BASE_URL": gemini_up.url,
    }
    code, out, err = run(tmp_path, env, "chat", "hello there friend")
    assert code == 0, err
    assert out.strip() == "hello there friend"  # the Gemini fake echoes
    assert "answered by gemini:gemini-2.0-flash" in err
    assert len(openai_down.requests) == 1


def test_chat_stream_prints_tokens(tmp_path: Path, gemini_up: FakeUpstream) -> None:
    env = {"GEMINI_API_KEY": "g-key", "GEMINI_BASE_URL": gemini_up.url}
    code, out, err = run(tmp_path, env, "chat", "one two three", "--stream", "-m", "gemini:gemini-2.0-flash")
    assert code == 0, err
    assert out == "one two three\n"


def test_every_failure_is_listed_and_exit_is_nonzero(tmp_path: Path, openai_down: FakeUpstream) -> None:
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": f"{openai_down.url}/v1"}
    code, _, err = run(tmp_path, env, "chat", "hi")
    assert code == 1
    assert "openai:gpt-4o-mini error ProviderUnavailableError HTTP 503" in err
    assert "gemini:gemini-2.0-flash skipped" in err and "GEMINI_API_KEY" in err
    assert "sk-test" not in err


def test_providers_matrix_names_missing_variables(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, {"OPENAI_API_KEY": "sk-test"}, "providers")
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "configured" in rows["openai"]
    assert "missing GEMINI_API_KEY" in rows["gemini"]
    assert "disabled" in rows["spare"]


def test_bad_config_is_exit_2_with_the_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("runtime:\n  router:\n    timeout: -5\n")
    result = runner.invoke(app, ["chat", "hi", "--config", str(bad)])
    assert result.exit_code == 2
    assert "runtime.router.timeout" in result.stderr


def test_openai_fake_is_usable_from_the_cli(tmp_path: Path) -> None:
    with FakeUpstream(OpenAIFake(api_key="sk-test")) as up:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": f"{up.url}/v1"}
        code, out, err = run(tmp_path, env, "chat", "hi", "-m", "openai:gpt-4o-mini")
    assert code == 0, err
    assert out.strip() == "Hello from the fake."
