"""From validated settings to a ready :class:`~polyroute.router.Router`.

This is the one place that maps a provider ``kind`` in configuration to a provider class;
the router itself only ever sees the Provider protocol. Provider modules are imported only
for kinds that are configured and enabled, so an unused provider costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from polyroute.config.schema import AliasSettings, ProviderSettings, Settings, SharedStateSettings
from polyroute.errors import ConfigError
from polyroute.pricing import load_prices
from polyroute.providers.base import Provider
from polyroute.router import RetryPolicy, Router
from polyroute.router.breaker import BreakerSettings
from polyroute.router.policy import Deployment, HedgePolicy, RoutingPolicy

if TYPE_CHECKING:
    from polyroute.router.shared import SharedState

__all__ = ["KINDS", "build_provider", "build_router", "disabled_providers"]

#: wire-format kind -> (module, class); OpenAI-compatible services are presets of "openai"
KINDS: dict[str, tuple[str, str]] = {
    "openai": ("polyroute.providers.openai", "OpenAIProvider"),
    "gemini": ("polyroute.providers.gemini", "GeminiProvider"),
    "anthropic": ("polyroute.providers.anthropic", "AnthropicProvider"),
    "cohere": ("polyroute.providers.cohere", "CohereProvider"),
    "ollama": ("polyroute.providers.ollama", "OllamaProvider"),
    "local": ("polyroute.providers.local", "LocalProvider"),
    "azure": ("polyroute.providers.azure", "AzureOpenAIProvider"),
    "vertex": ("polyroute.providers.vertex", "VertexGeminiProvider"),
    "bedrock": ("polyroute.providers.bedrock", "BedrockProvider"),
}


def _presets() -> Mapping[str, Any]:
    module = importlib.import_module("polyroute.providers.presets")
    presets: Mapping[str, Any] = module.PRESETS
    return presets


def _provider_class(kind: str, name: str, source: str) -> Any:
    try:
        module_name, class_name = KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise ConfigError(f"{source}: providers.{name}.kind: unknown provider kind {kind!r} (known: {known})") from None
    return getattr(importlib.import_module(module_name), class_name)


def build_provider(
    name: str, cfg: ProviderSettings, environ: Mapping[str, str], *, source: str = "<config>"
) -> Provider:
    """Build one provider: explicit config values first, then the provider's env conventions.

    An empty value (``apiKey: ${OPENAI_API_KEY}`` with the variable unset) counts as "not
    given", so the provider falls back to its own environment variables and, failing those,
    reports itself as not configured.
    """
    presets = _presets()
    implied = cfg.kind in (None, "openai") and name in presets and name not in KINDS
    preset_name = cfg.preset or (name if implied else None)
    kind = cfg.kind or ("openai" if preset_name else name)
    overrides: dict[str, Any] = dict(cfg.options)
    if cfg.headers:
        overrides["headers"] = cfg.headers
    if cfg.api_key:
        overrides["api_key"] = cfg.api_key
    if cfg.endpoint:
        overrides["base_url"] = cfg.endpoint
    try:
        if kind == "openai" and preset_name:
            module = importlib.import_module("polyroute.providers.presets")
            factory: Callable[..., Provider] = module.preset
            provider = factory(preset_name, name=name, environ=environ, **overrides)
        else:
            cls = _provider_class(kind, name, source)
            if hasattr(cls, "from_env"):
                provider = cls.from_env(name=name, environ=environ, **overrides)
            else:
                provider = cls(name=name, **overrides)
    except TypeError as exc:
        raise ConfigError(f"{source}: providers.{name}: {exc}") from None
    if cfg.api_key_env and hasattr(provider, "api_key_env"):
        provider.api_key_env = cfg.api_key_env
    return provider


def build_policy(alias: str, cfg: AliasSettings) -> RoutingPolicy:
    """The router's policy object for one alias's object-form configuration."""
    deployments = tuple(
        Deployment(
            model=d.model,
            weight=d.weight,
            input_price=d.input_price,
            output_price=d.output_price,
            rpm=d.rpm,
            tpm=d.tpm,
            context_window=d.context_window,
            max_output_tokens=d.max_output_tokens,
        )
        for d in cfg.deployments
    )
    hedge = cfg.hedge
    return RoutingPolicy(
        strategy=cfg.strategy or ("weighted" if deployments else "ordered"),
        deployments=deployments,
        sticky=cfg.sticky,
        hedge=HedgePolicy(**hedge.model_dump()) if hedge is not None else None,
        resume=cfg.resume,
        on_context_length=cfg.on_context_length,
        on_content_filter=cfg.on_content_filter,
        name=alias,
    )


def disabled_providers(settings: Settings) -> list[str]:
    return [name for name, cfg in settings.providers.items() if not cfg.enabled]


def _shared_state(spec: str | SharedStateSettings | None, source: str) -> SharedState | None:
    """Redis-backed limits and circuits when a URL is configured (redis is imported only then)."""
    if not spec:
        return None
    from polyroute.router.shared import SharedState

    options = spec if isinstance(spec, SharedStateSettings) else SharedStateSettings(url=spec)
    try:
        return SharedState(options.url, prefix=options.prefix, auth_ttl=options.auth_ttl)
    except ConfigError as exc:
        raise ConfigError(f"{source}: runtime.router.sharedState: {exc}") from None


def build_router(settings: Settings, environ: Mapping[str, str] | None = None) -> Router:
    """A router with every enabled provider registered and every alias defined."""
    import os

    env = environ if environ is not None else os.environ
    rs = settings.runtime.router
    try:
        breaker = BreakerSettings(**rs.breaker.model_dump())
    except ValueError as exc:
        raise ConfigError(f"{settings.source}: runtime.router.breaker: {exc}") from None
    router = Router(
        max_concurrency=rs.max_concurrency,
        timeout=rs.timeout,
        connect_timeout=rs.connect_timeout,
        first_token_timeout=rs.first_token_timeout,
        idle_timeout=rs.idle_timeout,
        provider_timeout=rs.provider_timeout,
        max_provider_concurrency=rs.max_provider_concurrency,
        retry=RetryPolicy(max_retries=rs.retries, max_attempts=rs.max_attempts, max_retry_after=rs.max_retry_after),
        aliases=settings.models,
        prices=load_prices(settings) if settings.pricing else None,
        breaker=breaker,
        shared=_shared_state(rs.shared_state or env.get("POLYROUTE_REDIS_URL"), settings.source),
    )
    for alias, alias_cfg in settings.routing.items():
        try:
            router.set_policy(alias, build_policy(alias, alias_cfg))
        except ValueError as exc:
            raise ConfigError(f"{settings.source}: models.{alias}: {exc}") from None
    for name, cfg in settings.providers.items():
        if not cfg.enabled:
            continue
        provider = build_provider(name, cfg, env, source=settings.source)
        router.register(provider, name=name, max_concurrency=cfg.max_concurrency, timeout=cfg.timeout)
    return router
