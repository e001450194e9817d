"""serve(): uvicorn with uvloop/httptools, and no open server without API keys."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import httpx2
import pytest

from polyroute.runtime import create_app
from polyroute.runtime.server import build_server
from runtime.support import EchoProvider, ServerThread, free_port, make_router, settings_for


def test_no_keys_means_loopback_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(make_router(EchoProvider("fake")), settings_for(tmp_path, host="0.0.0.0"))
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit, match="refusing to listen on '0.0.0.0'"):
        build_server(app, settings_for(tmp_path, host="0.0.0.0"))
    assert "auth is OFF" in caplog.text


def test_keys_allow_any_host_and_the_fast_loop_is_used(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, host="0.0.0.0", apiKeys=["pr-key-0123456789"])
    server = build_server(create_app(make_router(EchoProvider("fake")), settings), settings)
    assert (server.config.host, server.config.port) == ("0.0.0.0", 8080)
    assert server.config.loop == "uvloop"
    assert server.config.http == "httptools"


def test_loopback_without_keys_serves_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(tmp_path, port=free_port())
    with (
        caplog.at_level(logging.WARNING),
        ServerThread(create_app(make_router(EchoProvider("fake")), settings), settings) as server,
    ):
        assert httpx2.get(f"{server.url}/health").json() == {"status": "ok"}
    assert "auth is OFF" in caplog.text


def test_in_flight_requests_finish_during_shutdown(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, port=free_port())
    fake = EchoProvider("fake", delay=0.5)
    app = create_app(make_router(fake), settings)
    with ServerThread(app, settings) as server, httpx2.Client(base_url=server.url, timeout=10) as client:
        aid = client.post("/agents", json={"name": "a", "model": "fake:small"}).json()["agentId"]
        url = f"/agents/{aid}/sessions/" + client.post(f"/agents/{aid}/sessions", json={}).json()["sessionId"]
        result: dict[str, httpx2.Response] = {}
        thread = threading.Thread(
            target=lambda: result.setdefault("r", client.post(f"{url}/messages", json={"content": "hi"}))
        )
        thread.start()
        while not fake.calls:
            time.sleep(0.01)
        server.server.should_exit = True
        thread.join(10)
    assert result["r"].status_code == 200
    assert result["r"].json()["content"] == "echo: hi"
    restarted = settings_for(tmp_path, port=free_port())
    with ServerThread(create_app(make_router(EchoProvider("fake")), restarted), restarted) as server:
        stored = httpx2.get(f"{server.url}{url}/messages").json()["data"]
    assert [(m["content"], m["status"]) for m in stored] == [("hi", "complete"), ("echo: hi", "complete")]
