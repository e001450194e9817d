"""``polyroute check``: probes every deployment and forces each alias candidate to fail in turn."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fakes.openai_server import OpenAIFake, error_reply
from fakes.upstream import FakeUpstream, Recorded, Reply
from polyroute.cli import app


def handler(request: Recorded) -> Reply:
    if request.json().get("model") == "broken":
        return error_reply(500, "The server had an error", "server_error")
    return OpenAIFake(api_key=None)(request)


def config(tmp_path: Path, url: str, models: str) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(f"providers:\n  openai:\n    apiKey: sk-test\n    endpoint: {url}/v1\nmodels:\n{models}")
    return ["check", "-c", str(path), "--env-file", str(tmp_path / "none"), "--timeout", "5"]


def test_check_reports_each_deployment_and_each_forced_failover(tmp_path: Path) -> None:
    models = (
        "  chat:\n    deployments:\n      - {model: openai:broken, contextWindow: 128000, maxOutputTokens: 16384}\n"
        "      - openai:gpt-4o-mini\n"
        "  embed: [openai:text-embedding-3-small]\n"
    )
    with FakeUpstream(handler) as up:
        result = CliRunner().invoke(app, config(tmp_path, up.url, models), env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    broken = next(line for line in lines if "openai:broken" in line and "provider_unavailable" in line)
    assert "context 128000, max output 16384" in broken
    assert any("openai:gpt-4o-mini" in line and " ok " in line for line in lines)
    assert any("openai:text-embedding-3-small" in line and " ok " in line for line in lines)
    assert "openai:broken yes" in result.output  # with it forced to fail, gpt-4o-mini answered
    paths = {r.path for r in up.requests}
    assert paths == {"/v1/chat/completions", "/v1/embeddings"}


def test_check_fails_when_a_chain_cannot_serve(tmp_path: Path) -> None:
    with FakeUpstream(handler) as up:
        models = "  dead: [openai:broken]\n  fine: [openai:gpt-4o-mini]\n"
        result = CliRunner().invoke(app, [*config(tmp_path, up.url, models), "-a", "dead"], env={"COLUMNS": "220"})
    assert result.exit_code == 1, result.output
    assert "dead" in result.output and "fine" not in result.output
