"""Turning a request's ``model`` and ``fallbacks`` into the ordered list of candidates.

A model spec is a ``provider:model_id`` string, a :class:`ModelRef`, or an alias name that
configuration maps to a list of specs (which may name other aliases). The expansion keeps
the first occurrence of each candidate so a chain never calls the same model twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from polyroute.errors import ConfigError
from polyroute.types import ModelRef, ModelSpec

__all__ = ["AliasTable", "Reorder", "expand_chain"]

AliasTable = Mapping[str, Sequence[ModelSpec]]
#: (alias name, its entries) -> the entries in the order to try them (load balancing)
Reorder = Callable[[str, Sequence[ModelSpec]], Sequence[ModelSpec]]


def _expand(
    spec: ModelSpec, aliases: AliasTable, seen_aliases: tuple[str, ...], reorder: Reorder | None = None
) -> Iterable[ModelRef]:
    if isinstance(spec, ModelRef):
        yield spec
        return
    name = spec.strip()
    if name in aliases:
        if name in seen_aliases:
            raise ConfigError(f"model alias cycle: {' -> '.join((*seen_aliases, name))}")
        entries = aliases[name] if reorder is None else reorder(name, aliases[name])
        for inner in entries:
            yield from _expand(inner, aliases, (*seen_aliases, name), reorder)
        return
    if ":" not in name:
        known = ", ".join(sorted(aliases)) or "none are configured"
        raise ConfigError(f"unknown model alias {name!r} (aliases: {known}); use 'provider:model_id' or an alias")
    yield ModelRef.parse(name)


def expand_chain(
    model: ModelSpec, fallbacks: Sequence[ModelSpec], aliases: AliasTable, reorder: Reorder | None = None
) -> list[ModelRef]:
    """The ordered, de-duplicated candidates for ``model`` followed by ``fallbacks``."""
    chain: list[ModelRef] = []
    seen: set[tuple[str, str]] = set()
    for spec in (model, *fallbacks):
        for ref in _expand(spec, aliases, (), reorder):
            key = (ref.provider, ref.model_id)
            if key not in seen:
                seen.add(key)
                chain.append(ref)
    return chain
