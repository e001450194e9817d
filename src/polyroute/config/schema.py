"""The validated shape of ``config/default.yaml``.

Keys are camelCase in YAML (as in the HTTP API) and snake_case in Python; both spellings
are accepted. Unknown keys are rejected so that a typo is an error that names the key, not
a setting silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from polyroute.types import ModelRef

__all__ = ["ProviderSettings", "RouterSettings", "Settings"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=_camel, populate_by_name=True, extra="forbid")


class ProviderSettings(_Section):
    """One provider entry. ``kind`` is the wire format; it defaults to the entry's name."""

    kind: str | None = None
    #: an OpenAI-compatible preset (groq, openrouter, ...) for ``kind: openai``
    preset: str | None = None
    enabled: bool = True
    endpoint: str | None = None
    api_key: str | None = None
    #: the environment variable the key comes from, reported when it is missing
    api_key_env: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    #: anything else the provider's constructor takes (model paths, API version, ...)
    options: dict[str, Any] = Field(default_factory=dict)


class RouterSettings(_Section):
    max_concurrency: int = Field(default=64, ge=1)
    max_provider_concurrency: int | None = Field(default=None, ge=1)
    timeout: float = Field(default=60.0, gt=0)
    provider_timeout: float | None = Field(default=None, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    first_token_timeout: float | None = Field(default=None, gt=0)
    idle_timeout: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0, le=10)
    max_attempts: int = Field(default=10, ge=1, le=50)
    max_retry_after: float = Field(default=30.0, ge=0)


class RuntimeSettings(_Section):
    router: RouterSettings = Field(default_factory=RouterSettings)


class Settings(_Section):
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    #: alias -> ordered candidates (``provider:model`` strings, object-form refs or other aliases)
    models: dict[str, list[str | ModelRef]] = Field(default_factory=dict)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    #: HTTP server settings, validated by :mod:`polyroute.runtime.settings` when serving
    server: dict[str, Any] = Field(default_factory=dict)
    #: where these settings were read from, for messages
    source: str = Field(default="<defaults>", exclude=True)

    @field_validator("models", mode="before")
    @classmethod
    def _alias_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, (str, dict)) else v for k, v in value.items()}
        return value

    @field_validator("models")
    @classmethod
    def _alias_names(cls, value: dict[str, list[str | ModelRef]]) -> dict[str, list[str | ModelRef]]:
        for name in value:
            if ":" in name:
                raise ValueError(f"alias {name!r} must not contain ':'")
        return value
