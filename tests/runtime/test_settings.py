"""ServerSettings: defaults, camelCase and snake_case, environment fallbacks, URL rewriting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from polyroute.runtime import ServerSettings


def test_defaults_without_environment() -> None:
    s = ServerSettings.from_mapping({}, env={})
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.data_dir == Path("data")
    assert s.database_url == f"sqlite+aiosqlite:///{Path('data') / 'polyroute.db'}"
    assert s.api_keys == []
    assert s.max_body_bytes == 1024 * 1024
    assert not s.auth_enabled
    assert s.loopback


def test_environment_fills_what_the_mapping_leaves_out(tmp_path: Path) -> None:
    env = {"POLYROUTE_DATA_DIR": str(tmp_path), "POLYROUTE_API_KEYS": " k1 , ,k2 "}
    s = ServerSettings.from_mapping({"port": 9000}, env=env)
    assert s.data_dir == tmp_path
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path / 'polyroute.db'}"
    assert s.api_keys == ["k1", "k2"]
    assert s.port == 9000


def test_the_mapping_wins_over_the_environment() -> None:
    env = {"POLYROUTE_DATABASE_URL": "postgresql://env/db", "POLYROUTE_API_KEYS": "envkey"}
    s = ServerSettings.from_mapping({"databaseUrl": "sqlite:///x.db", "api_keys": ["cfgkey"]}, env=env)
    assert s.database_url == "sqlite+aiosqlite:///x.db"
    assert s.api_keys == ["cfgkey"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgres://db/app", "postgresql+asyncpg://db/app"),
        ("postgresql+asyncpg://db/app", "postgresql+asyncpg://db/app"),
        ("sqlite:////var/lib/p.db", "sqlite+aiosqlite:////var/lib/p.db"),
    ],
)
def test_plain_database_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert ServerSettings.from_mapping({}, env={"POLYROUTE_DATABASE_URL": given}).database_url == expected


def test_camel_and_snake_case_keys() -> None:
    a = ServerSettings.from_mapping({"maxBodyBytes": 10, "shutdownGraceSeconds": 1, "maxHistoryMessages": 5}, env={})
    b = ServerSettings.from_mapping(
        {"max_body_bytes": 10, "shutdown_grace_seconds": 1, "max_history_messages": 5}, env={}
    )
    assert a == b


@pytest.mark.parametrize("bad", [{"port": 70000}, {"maxBodyBytes": 0}, {"hots": "x"}])
def test_invalid_settings_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServerSettings.from_mapping(bad, env={})


def test_redacted_hides_keys_and_passwords() -> None:
    s = ServerSettings.from_mapping({"apiKeys": ["secret-key"], "databaseUrl": "postgresql://u:hunter2@h/db"}, env={})
    text = str(s.redacted())
    assert "secret-key" not in text
    assert "hunter2" not in text
