"""``polyroute check``: probes every deployment and forces each alias and agent candidate to fail in turn."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fakes.openai_server import OpenAIFake, error_reply
from fakes.upstream import FakeUpstream, Recorded, Reply
from polyroute.cli import app
from polyroute.router import Router
from polyroute.runtime.auth import hash_key
from polyroute.storage import Database
from runtime.support import client_for, settings_for

KEY = "pr-admin-key"


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``polyroute serve`` would keep its database here: never the working directory's ./data."""
    data = tmp_path / "data"
    monkeypatch.setenv("POLYROUTE_DATA_DIR", str(data))
    monkeypatch.delenv("POLYROUTE_DATABASE_URL", raising=False)
    return data


def handler(request: Recorded) -> Reply:
    if request.json().get("model") == "broken":
        return error_reply(500, "The server had an error", "server_error")
    return OpenAIFake(api_key=None)(request)


def config(tmp_path: Path, url: str, models: str) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(f"providers:\n  openai:\n    apiKey: sk-test\n    endpoint: {url}/v1\nmodels:\n{models}")
    return ["check", "-c", str(path), "--env-file", str(tmp_path / "none"), "--timeout", "5"]


def invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args, env={"COLUMNS": "220"})


def create_agents(data_dir: Path, agents: list[dict[str, Any]]) -> list[str]:
    """Create ``agents`` through the runtime's own ``POST /agents`` (auth on); their ids."""

    async def go() -> list[str]:
        router = Router(aliases={"chat": ["openai:broken", "openai:gpt-4o-mini"]})
        settings = settings_for(data_dir, apiKeys=[KEY])
        async with client_for(router, settings, authorization=f"Bearer {KEY}") as client:
            ids = []
            for body in agents:
                response = await client.post("/agents", json=body)
                assert response.status_code == 201, response.text
                ids.append(response.json()["agentId"])
            return ids

    return asyncio.run(go())


def chain_line(output: str, label: str) -> str:
    return next(line for line in output.splitlines() if label in line)


def test_check_reports_each_deployment_and_each_forced_failover(tmp_path: Path) -> None:
    models = (
        "  chat:\n    deployments:\n      - {model: openai:broken, contextWindow: 128000, maxOutputTokens: 16384}\n"
        "      - openai:gpt-4o-mini\n"
        "  embed: [openai:text-embedding-3-small]\n"
    )
    with FakeUpstream(handler) as up:
        result = invoke(config(tmp_path, up.url, models))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    broken = next(line for line in lines if "openai:broken" in line and "provider_unavailable" in line)
    assert "context 128000, max output 16384" in broken
    assert any("openai:gpt-4o-mini" in line and " ok " in line for line in lines)
    assert any("openai:text-embedding-3-small" in line and " ok " in line for line in lines)
    assert "openai:broken yes" in chain_line(result.output, "alias chat")  # broken forced out: gpt-4o-mini answered
    paths = {r.path for r in up.requests}
    assert paths == {"/v1/chat/completions", "/v1/embeddings"}


def test_check_fails_when_a_chain_cannot_serve(tmp_path: Path) -> None:
    with FakeUpstream(handler) as up:
        models = "  dead: [openai:broken]\n  fine: [openai:gpt-4o-mini]\n"
        result = invoke([*config(tmp_path, up.url, models), "-a", "dead"])
    assert result.exit_code == 1, result.output
    assert "alias dead" in result.output and "fine" not in result.output
    assert "(agent_" not in result.output and "no agents" not in result.output  # --alias alone: only those


def test_without_a_database_check_says_so_and_creates_none(tmp_path: Path, isolated_data_dir: Path) -> None:
    with FakeUpstream(handler) as up:
        result = invoke(config(tmp_path, up.url, "  fine: [openai:gpt-4o-mini]\n"))
    assert result.exit_code == 0, result.output
    assert "no agents (database not created)" in result.output
    assert not isolated_data_dir.exists()
    isolated_data_dir.mkdir()
    (isolated_data_dir / "polyroute.db").touch()  # a file, but never migrated: no agents table
    with FakeUpstream(handler) as up:
        again = invoke(config(tmp_path, up.url, "  fine: [openai:gpt-4o-mini]\n"))
    assert again.exit_code == 0 and "no agents (database not created)" in again.output, again.output


def test_every_stored_agent_chain_is_checked_like_an_alias(tmp_path: Path, isolated_data_dir: Path) -> None:
    support, aliased = create_agents(
        isolated_data_dir,
        [
            {"name": "support", "model": "openai:broken", "config": {"fallbackModels": ["openai:gpt-4o-mini"]}},
            {"name": "aliased", "model": "chat"},
        ],
    )
    with FakeUpstream(handler) as up:
        result = invoke(config(tmp_path, up.url, "  chat: [openai:broken, openai:gpt-4o-mini]\n"))
    assert result.exit_code == 0, result.output
    for name, ident in (("support", support), ("aliased", aliased)):
        line = chain_line(result.output, f"agent {name} ({ident})")
        assert " yes " in line and "openai:broken yes" in line, result.output
    assert hash_key(KEY) not in result.output and KEY not in result.output
    # each agent's chain went through the fake: its model forced out, the fallback answered
    assert sum(r.json().get("model") == "gpt-4o-mini" for r in up.requests) >= 4


def test_an_agent_whose_chain_cannot_serve_fails_the_check(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'elsewhere.db'}"

    async def seed() -> None:
        database = Database(url)
        await database.open()
        try:
            for name, model in (("lonely", "openai:broken"), ("lost", "no-such-alias"), ("ok", "openai:gpt-4o-mini")):
                await database.store.create_agent("o", name=name, description=None, model=model, tools=[], config={})
        finally:
            await database.close()

    asyncio.run(seed())
    with FakeUpstream(handler) as up:
        args = [*config(tmp_path, up.url, "  fine: [openai:gpt-4o-mini]\n"), "--database-url", url]
        result = invoke(args)
        only_ok = invoke([*args, "--agent", "ok"])
        unknown = invoke([*args, "--agent", "nobody"])
    assert result.exit_code == 1, result.output
    assert " no " in chain_line(result.output, "agent lonely (")
    lost = chain_line(result.output, "agent lost (")
    assert " no " in lost and "unknown model alias" in lost
    assert " yes " in chain_line(result.output, "agent ok (")
    assert only_ok.exit_code == 0, only_ok.output
    assert "agent ok (" in only_ok.output and "lonely" not in only_ok.output and "alias fine" not in only_ok.output
    assert unknown.exit_code == 2 and "unknown agent: nobody" in unknown.output


def test_an_unreadable_database_is_reported_without_its_password(tmp_path: Path) -> None:
    url = "postgresql://check:s3cret-pw@127.0.0.1:1/polyroute"  # nothing listens on port 1
    with FakeUpstream(handler) as up:
        result = invoke([*config(tmp_path, up.url, "  fine: [openai:gpt-4o-mini]\n"), "--database-url", url])
    assert result.exit_code == 1, result.output
    assert "cannot read agents" in result.output and "s3cret-pw" not in result.output
