"""The provider matrix: every provider kind and preset, as its code declares it.

``polyroute providers`` and ``docs/providers.md`` both come from :func:`entries`, and
:func:`entries` reads nothing but the code: the kinds registered in
:data:`polyroute.config.build.KINDS`, the OpenAI-compatible services in
:data:`polyroute.providers.presets.PRESETS`, each class's declared ``capabilities``, and,
for the environment variables and the default endpoint, what the provider *does* when built
from an empty environment: each is built through its own ``from_env`` (or preset) with a
mapping that records every variable name looked up. So the list of variables is exactly
what the provider reads, and cannot drift from it.

Nothing here opens a connection or reads the real environment, so the result is the same
on every machine.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from polyroute.providers.base import Capabilities

__all__ = ["CatalogEntry", "entries", "entry", "render_markdown"]

_CAPABILITY_TITLES = {
    "chat": "chat",
    "stream": "stream",
    "embeddings": "embeddings",
    "tools": "tools",
    "vision": "vision",
    "json_output": "JSON output",
}


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One row of the provider matrix."""

    #: the name used in model references (``<name>:<model_id>``) and in config
    name: str
    #: the wire format (a ``kind`` in config); presets are of kind ``openai``
    kind: str
    #: the provider class, as ``module.Class``
    provider_class: str
    capabilities: Capabilities
    #: every environment variable the provider reads, in the order it reads them
    env_vars: tuple[str, ...]
    #: where requests go when nothing is configured; None for in-process providers
    default_endpoint: str | None
    #: True for an OpenAI-compatible service preset
    preset: bool = False
    #: whether the provider can be called without a credential
    needs_credentials: bool = True
    docs: str = ""


class _RecordingEnviron(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __getitem__(self, key: str) -> str:
        if key not in self.names:
            self.names.append(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and key not in self.names:
            self.names.append(key)
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _dedupe(*groups: Any) -> tuple[str, ...]:
    seen: list[str] = []
    for group in groups:
        for name in group or ():
            if isinstance(name, str) and name and name not in seen:
                seen.append(name)
    return tuple(seen)


def _kind_entry(kind: str, module_name: str, class_name: str) -> CatalogEntry:
    cls = getattr(importlib.import_module(module_name), class_name)
    if not hasattr(cls, "from_env"):  # in-process providers: configured by options, not variables
        caps = cls.capabilities
        return CatalogEntry(kind, kind, f"{module_name}.{class_name}", caps, (), None, needs_credentials=False)
    environ = _RecordingEnviron()
    provider = cls.from_env(name=kind, environ=environ)
    missing = provider.missing_config()
    return CatalogEntry(
        name=kind,
        kind=kind,
        provider_class=f"{module_name}.{class_name}",
        capabilities=provider.capabilities,
        env_vars=_dedupe(environ.names),
        default_endpoint=getattr(provider, "base_url", None),
        needs_credentials=missing is not None,
    )


def _preset_entry(spec: Any) -> CatalogEntry:
    environ = _RecordingEnviron()
    provider = spec.build(environ=environ)
    cls = type(provider)
    return CatalogEntry(
        name=spec.name,
        kind="openai",
        provider_class=f"{cls.__module__}.{cls.__qualname__}",
        capabilities=spec.capabilities,
        env_vars=_dedupe(environ.names),
        default_endpoint=spec.base_url,
        preset=True,
        needs_credentials=spec.requires_key,
        docs=spec.docs,
    )


def entries() -> list[CatalogEntry]:
    """Every provider kind (sorted), then every OpenAI-compatible preset not named like a kind."""
    from polyroute.config.build import KINDS
    from polyroute.providers.presets import PRESETS

    rows = [_kind_entry(kind, *KINDS[kind]) for kind in sorted(KINDS)]
    rows += [_preset_entry(PRESETS[name]) for name in sorted(PRESETS) if name not in KINDS]
    return rows


def entry(name: str) -> CatalogEntry | None:
    """The row for one provider or preset name, or None."""
    return next((row for row in entries() if row.name == name), None)


def _tick(value: bool) -> str:
    return "yes" if value else "no"


def render_markdown(rows: list[CatalogEntry] | None = None) -> str:
    """``docs/providers.md``: the matrix, then each provider's variables and endpoint."""
    rows = entries() if rows is None else rows
    head = ["provider", "kind", *_CAPABILITY_TITLES.values()]
    lines = [
        "# Providers",
        "",
        "<!-- Generated by scripts/gen_provider_docs.py from the provider classes; do not edit by hand. -->",
        "",
        "Each provider's declared capabilities. A model reference is `<provider>:<model_id>`; presets",
        "are OpenAI-compatible services served by the `openai` wire format. Capabilities describe the",
        "API, not every model behind it.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for row in rows:
        caps = row.capabilities.as_dict()
        kind = f"{row.kind} (preset)" if row.preset else row.kind
        lines.append("| " + " | ".join([f"`{row.name}`", kind, *(_tick(caps[k]) for k in _CAPABILITY_TITLES)]) + " |")
    lines += ["", "## Configuration", ""]
    lines += ["| provider | environment variables | default endpoint | credential |", "|---|---|---|---|"]
    for row in rows:
        env = ", ".join(f"`{name}`" for name in row.env_vars) or "none"
        endpoint = f"`{row.default_endpoint}`" if row.default_endpoint else "in-process"
        credential = "required" if row.needs_credentials else "optional"
        lines.append(f"| `{row.name}` | {env} | {endpoint} | {credential} |")
    return "\n".join(lines) + "\n"
