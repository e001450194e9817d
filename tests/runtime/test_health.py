"""/health and /ready: liveness, and each provider's status with the reason."""

from __future__ import annotations

from pathlib import Path

import httpx2

from polyroute.runtime import create_app
from runtime.support import EchoProvider, client_for, make_router, running, settings_for


async def test_health(client: httpx2.AsyncClient) -> None:
    r = await client.get("/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_ready_reports_each_provider(tmp_path: Path) -> None:
    router = make_router(EchoProvider("fake"), EchoProvider("openai", missing="OPENAI_API_KEY"), EchoProvider("groq"))
    app = create_app(router, settings_for(tmp_path), disabled_providers=["groq", "anthropic"])
    async with running(app) as client:
        r = await client.get("/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["database"] == {"backend": "sqlite", "status": "ok"}
    providers = body["providers"]
    assert providers["fake"]["status"] == "available"
    assert providers["fake"]["capabilities"]["chat"] is True
    assert providers["openai"]["status"] == "not_configured"
    assert providers["openai"]["missingEnvVar"] == "OPENAI_API_KEY"
    assert providers["groq"]["status"] == "disabled"
    assert providers["anthropic"] == {"status": "disabled"}


async def test_not_ready_without_an_available_provider(tmp_path: Path) -> None:
    router = make_router(EchoProvider("openai", missing="OPENAI_API_KEY"))
    async with client_for(router, settings_for(tmp_path)) as client:
        r = await client.get("/ready")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready"


async def test_not_ready_when_the_database_is_down(tmp_path: Path) -> None:
    app = create_app(make_router(EchoProvider("fake")), settings_for(tmp_path))
    async with running(app) as client:
        await app.state.runtime.database.store.engine.dispose()

        async def broken() -> None:
            raise OSError("database gone")

        app.state.runtime.store.ping = broken
        r = await client.get("/ready")
    assert r.status_code == 503
    assert r.json()["database"]["status"] == "unavailable"


async def test_router_health_and_attempt_headers_show_the_failover(tmp_path: Path) -> None:
    from fakes.scripted import Step
    from polyroute import errors

    down = EchoProvider("openai", [Step(error=errors.ProviderUnavailableError("down", status=503))])
    router = make_router(down, EchoProvider("gemini"))
    async with client_for(router, settings_for(tmp_path)) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "openai:gpt-4o-mini", "fallbacks": ["gemini:flash"], "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-polyroute-provider"] == "gemini"
        assert r.headers["x-polyroute-attempts"] == (
            "openai:gpt-4o-mini=error(ProviderUnavailableError 503), gemini:flash=ok"
        )
        health = await client.get("/v1/router/health")
    assert health.status_code == 200
    rows = {(d["provider"], d["model"]): d for d in health.json()["deployments"]}
    assert rows[("openai", "gpt-4o-mini")]["failures"] == 1
    assert rows[("gemini", "flash")]["state"] == "closed"
