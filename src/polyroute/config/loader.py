"""Reading configuration: YAML file + ``.env`` + the process environment.

``${VAR}`` and ``${VAR:-default}`` are expanded inside string values after the YAML is
parsed (never by text substitution, so a value cannot inject YAML). The real environment
wins over ``.env``, as with every twelve-factor tool. Validation errors name the file, the
key path and the problem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from pydantic import ValidationError

from polyroute.config.schema import Settings
from polyroute.errors import ConfigError

__all__ = ["default_config_path", "load_environment", "load_settings"]

# innermost ${VAR} or ${VAR:-default}; applied until nothing changes, so defaults may nest
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^${}]*))?\}")
_WHOLE_VAR = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}$")


def default_config_path() -> Path | None:
    """``$POLYROUTE_CONFIG``, else ``./config/default.yaml``, else the one shipped with polyroute."""
    explicit = os.environ.get("POLYROUTE_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path.cwd() / "config" / "default.yaml"
    if local.is_file():
        return local
    for candidate in (
        Path(__file__).with_name("default.yaml"),  # installed wheel
        Path(__file__).resolve().parents[3] / "config" / "default.yaml",  # source checkout
    ):
        if candidate.is_file():
            return candidate
    return None


def load_environment(env_file: str | Path | None = ".env") -> dict[str, str]:
    """The process environment over the values of ``env_file`` (if it exists)."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


def _expand(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for _ in range(8):
            expanded = _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
            if expanded == value:
                break
            value = expanded
        return value
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    return value


def _note_key_variables(raw: dict[str, Any]) -> None:
    """Remember which env var each provider's key comes from, to name it when it is missing."""
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for entry in providers.values():
        if not isinstance(entry, dict):
            continue
        key = entry.get("apiKey", entry.get("api_key"))
        if isinstance(key, str) and "apiKeyEnv" not in entry and "api_key_env" not in entry:
            match = _WHOLE_VAR.match(key.strip())
            if match:
                entry["apiKeyEnv"] = match.group(1)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def load_settings(
    path: str | Path | None = None,
    *,
    env_file: str | Path | None = ".env",
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, expand and validate a config file (see :func:`default_config_path`)."""
    env = dict(environ) if environ is not None else load_environment(env_file)
    source = Path(path) if path is not None else default_config_path()
    raw: Any = {}
    if source is not None:
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the config file ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, not {type(raw).__name__}")
    _note_key_variables(raw)
    expanded = _expand(raw, env)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
    settings.source = str(source) if source else "<defaults>"
    return settings
