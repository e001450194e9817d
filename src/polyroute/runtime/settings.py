"""The HTTP runtime's settings: where to listen, where to store, who may call, which limits.

Built once at start from a mapping (the ``server`` section of the config file, camelCase or
snake_case keys) with the environment filling in what the mapping leaves out:
``POLYROUTE_DATA_DIR``, ``POLYROUTE_DATABASE_URL`` and ``POLYROUTE_API_KEYS`` (comma
separated). A value given in the mapping wins over the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from polyroute.storage.engine import normalize_url

__all__ = ["LOOPBACK_HOSTS", "ServerSettings"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

_ENV = {
    "data_dir": "POLYROUTE_DATA_DIR",
    "database_url": "POLYROUTE_DATABASE_URL",
    "api_keys": "POLYROUTE_API_KEYS",
}


class ServerSettings(BaseModel):
    """Validated runtime settings; see ``docs/runtime.md`` for what each one does."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Field(default_factory=lambda: Path(os.environ.get("POLYROUTE_DATA_DIR") or "./data"))
    #: empty means ``sqlite+aiosqlite:///<data_dir>/polyroute.db``
    database_url: str = Field(default_factory=lambda: os.environ.get("POLYROUTE_DATABASE_URL") or "")
    api_keys: list[str] = Field(default_factory=lambda: _split_keys(os.environ.get("POLYROUTE_API_KEYS")))

    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_message_chars: int = Field(default=100_000, gt=0)
    max_history_messages: int = Field(default=200, gt=0)
    default_history_token_window: int = Field(default=8000, gt=0)
    max_page_size: int = Field(default=100, gt=0)

    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    #: how long a message waits for an earlier message to the same session before a 409
    session_lock_timeout: float = Field(default=120.0, gt=0)
    db_pool_size: int = Field(default=10, gt=0)
    db_lock_pool_size: int = Field(default=20, gt=0)
    log_level: str = "info"
    #: log exception tracebacks (off by default: they may quote request data)
    debug: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_keys(value)
        if isinstance(value, list | tuple):
            return [str(v).strip() for v in value if str(v).strip()]
        return value

    @model_validator(mode="after")
    def _database(self) -> ServerSettings:
        url = self.database_url.strip() or f"sqlite+aiosqlite:///{self.data_dir / 'polyroute.db'}"
        object.__setattr__(self, "database_url", normalize_url(url))
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> ServerSettings:
        """Settings from ``values`` (camelCase or snake_case), the environment filling the gaps.

        ``env`` defaults to ``os.environ``; pass a mapping to make the result independent of it.
        """
        env = os.environ if env is None else env
        data = dict(values or {})
        given = {_snake(k) for k in data}
        for field, var in _ENV.items():
            if field not in given and env.get(var):
                data[field] = env[var]
        if "data_dir" not in given and not env.get(_ENV["data_dir"]):
            data["data_dir"] = "./data"
        for field in ("database_url", "api_keys"):
            if field not in given and not env.get(_ENV[field]):
                data[field] = "" if field == "database_url" else []
        return cls.model_validate(data)

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON, with keys and database passwords left out (for logs)."""
        from sqlalchemy.engine import make_url

        data = self.model_dump(mode="json", by_alias=True)
        data["apiKeys"] = f"<{len(self.api_keys)} key(s)>"
        data["databaseUrl"] = make_url(self.database_url).render_as_string(hide_password=True)
        return data


def _split_keys(raw: str | None) -> list[str]:
    return [k.strip() for k in (raw or "").split(",") if k.strip()]


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
