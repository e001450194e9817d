"""The validated shape of ``config/default.yaml``.

Keys are camelCase in YAML (as in the HTTP API) and snake_case in Python; both spellings
are accepted. Unknown keys are rejected so that a typo is an error that names the key, not
a setting silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polyroute.types import ModelRef

__all__ = [
    "AliasSettings",
    "BreakerConfig",
    "DeploymentSettings",
    "HedgeSettings",
    "PriceSettings",
    "ProviderSettings",
    "RouterSettings",
    "Settings",
]


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


class BreakerConfig(_Section):
    """Per-deployment circuit breakers (see ``polyroute.router.breaker``)."""

    enabled: bool = True
    failure_threshold: int = Field(default=5, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    window: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=10, ge=1)
    cooldown: float = Field(default=30.0, ge=0)
    max_cooldown: float = Field(default=300.0, ge=0)
    open_on_retry_after: bool = True


class DeploymentSettings(_Section):
    """One member of a balanced alias: ``{model, weight, inputPrice, outputPrice, rpm, tpm}``."""

    model: str | ModelRef
    weight: float = Field(default=1.0, ge=0)
    #: price per million input / output tokens (``lowest_cost``)
    input_price: float | None = Field(default=None, ge=0)
    output_price: float | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    #: the model's known limits, in tokens (reported by ``polyroute check``)
    context_window: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)


class HedgeSettings(_Section):
    """``{delay: 1.5}`` or ``{percentile: 95, minSamples: 20, delay: 2}``, plus ``budget``."""

    delay: float | None = Field(default=None, ge=0)
    percentile: float | None = Field(default=None, gt=0, lt=100)
    min_samples: int = Field(default=20, ge=1)
    min_delay: float = Field(default=0.0, ge=0)
    budget: float = Field(default=0.1, ge=0, le=1)
    burst: float = Field(default=5.0, ge=1)

    @model_validator(mode="after")
    def _needs_a_delay(self) -> HedgeSettings:
        if self.delay is None and self.percentile is None:
            raise ValueError("hedge needs 'delay' (seconds) or 'percentile' (of observed time to first token)")
        return self


Strategy = Literal["ordered", "weighted", "lowest_latency", "least_in_flight", "lowest_cost"]


class AliasSettings(_Section):
    """The object form of an alias: a balanced group, its fallbacks and its resilience policy."""

    #: default: ``weighted`` when ``deployments`` are given, else ``ordered``
    strategy: Strategy | None = None
    deployments: list[DeploymentSettings] = Field(default_factory=list)
    fallbacks: list[str | ModelRef] = Field(default_factory=list)
    sticky: bool = False
    hedge: HedgeSettings | None = None
    resume: bool = False
    #: ``stop`` (default), ``next``, or a model reference / alias to try next
    on_context_length: str = "stop"
    on_content_filter: str = "stop"

    @field_validator("strategy", mode="before")
    @classmethod
    def _dashes(cls, value: Any) -> Any:
        return value.replace("-", "_") if isinstance(value, str) else value

    @field_validator("deployments", mode="before")
    @classmethod
    def _plain_models(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [
                {"model": v} if isinstance(v, str) or (isinstance(v, dict) and "provider" in v) else v for v in value
            ]
        return value

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _fallback_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value

    def candidates(self) -> list[str | ModelRef]:
        """The alias's entries in fallback order: the group first, then the fallbacks."""
        return [d.model for d in self.deployments] + list(self.fallbacks)


class SharedStateSettings(_Section):
    """Where replicas share limits, circuits, probe leases and refused keys (the object form of ``sharedState``)."""

    url: str
    #: namespaces every key and the channel: replicas that share state use the same prefix
    prefix: str = Field(default="polyroute", min_length=1)
    #: seconds a key refused on one replica is skipped by the others
    auth_ttl: float = Field(default=3600.0, gt=0)


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
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    #: ``redis://host:port/db`` (or ``{url, prefix, authTtl}``): rpm/tpm limits, open circuits,
    #: probe leases and refused keys shared by every replica (``POLYROUTE_REDIS_URL`` when
    #: unset; neither: per process)
    shared_state: str | SharedStateSettings | None = None


class PriceSettings(_Section):
    """USD per million tokens for one model (or pattern); read by :mod:`polyroute.pricing`."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    #: price of prompt tokens served from the provider's cache; the input price when unset
    cached_input: float | None = Field(default=None, ge=0)


class RuntimeSettings(_Section):
    router: RouterSettings = Field(default_factory=RouterSettings)


class Settings(_Section):
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    #: alias -> ordered candidates (``provider:model`` strings, object-form refs or other aliases)
    models: dict[str, list[str | ModelRef]] = Field(default_factory=dict)
    #: alias -> routing policy, from the object form of a ``models`` entry (which also fills
    #: ``models`` with the alias's candidates, so readers of ``models`` see plain lists)
    routing: dict[str, AliasSettings] = Field(default_factory=dict)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    #: ``provider:model`` (``*`` wildcards allowed) or a bare model id -> its token prices
    pricing: dict[str, PriceSettings] = Field(default_factory=dict)
    #: HTTP server settings, validated by :mod:`polyroute.runtime.settings` when serving
    server: dict[str, Any] = Field(default_factory=dict)
    #: where these settings were read from, for messages
    source: str = Field(default="<defaults>", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _split_alias_objects(cls, data: Any) -> Any:
        """``models: {name: {deployments: [...], ...}}`` -> a candidate list plus ``routing[name]``."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            return data
        models, routing = dict(data["models"]), dict(data.get("routing") or {})
        for name, value in data["models"].items():
            if isinstance(value, dict) and "provider" not in value:
                policy = AliasSettings.model_validate(value)
                routing[name] = policy
                models[name] = policy.candidates()
        return {**data, "models": models, "routing": routing}

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
