"""``polyroute status``: the health table from a configured router or a running server."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fakes.upstream import FakeUpstream, Recorded, Reply
from polyroute.cli import app

CONFIG = """
providers:
  openai: {apiKey: sk-test-123}
models:
  chat:
    deployments: ["openai:gpt-4o-mini", "openai:gpt-4.1-mini"]
    fallbacks: ["openai:gpt-4o"]
"""

HEALTH = {
    "healthy": False,
    "inFlight": 2,
    "maxConcurrency": 64,
    "waiting": 0,
    "deployments": [
        {
            "provider": "openai", "model": "gpt-4o-mini", "keyId": "abc", "state": "open", "retryInMs": 12000.0,
            "consecutiveFailures": 5, "errorRate": 0.8, "windowCalls": 10, "calls": 10, "failures": 8, "inFlight": 2,
            "latencyEwmaMs": 812.5, "latencyP50Ms": 790.0, "ttftEwmaMs": 301.0, "ttftP50Ms": 280.0,
            "lastError": "ProviderUnavailableError", "opened": 1,
        }
    ],
}  # fmt: skip


def test_status_lists_every_alias_deployment_without_revealing_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    args = ["status", "-c", str(config), "--env-file", str(tmp_path / "none")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for model in ("openai:gpt-4o-mini", "openai:gpt-4.1-mini", "openai:gpt-4o"):
        assert model in result.output
    assert "closed" in result.output and "sk-test-123" not in result.output


def test_status_reads_a_running_server(tmp_path: Path) -> None:
    def handler(request: Recorded) -> Reply:
        assert request.path == "/v1/router/health"
        return Reply.json(HEALTH)

    with FakeUpstream(handler) as server:
        result = CliRunner().invoke(app, ["status", "--url", server.url], env={"COLUMNS": "200"})
    assert result.exit_code == 1  # nothing healthy: non-zero, for scripts
    for shown in ("open (12s)", "80% of 10", "ProviderUnavailableError", "790"):
        assert shown in result.output


def test_status_json_is_the_health_shape(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["status", "--json", "-c", str(config), "--env-file", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert '"deployments"' in result.output and '"state": "closed"' in result.output
