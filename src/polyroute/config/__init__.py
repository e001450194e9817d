"""Configuration: ``config/default.yaml`` + ``.env`` -> validated settings -> a ready Router."""

from polyroute.config.build import build_provider, build_router, disabled_providers
from polyroute.config.loader import default_config_path, load_environment, load_settings
from polyroute.config.schema import ProviderSettings, RouterSettings, Settings

__all__ = [
    "ProviderSettings",
    "RouterSettings",
    "Settings",
    "build_provider",
    "build_router",
    "default_config_path",
    "disabled_providers",
    "load_environment",
    "load_settings",
]
