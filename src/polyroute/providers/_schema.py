"""JSON Schema as providers accept it: conversion into Gemini's OpenAPI-subset ``Schema``.

Gemini and Vertex AI take tool parameters and JSON-output schemas in their own ``Schema``
type, an OpenAPI 3.0 subset, rather than JSON Schema. The conversion lives here, apart from
the HTTP client, because more than one provider module needs it and because it is pure data
mapping that is easiest to test on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polyroute import errors

__all__ = ["gemini_schema"]

# JSON Schema keywords that Gemini's Schema also has, copied as they are. Everything else
# (additionalProperties, $schema, exclusiveMinimum, ...) is dropped: Gemini rejects it.
_SCHEMA_KEYS = frozenset({
    "title", "description", "minItems", "maxItems", "minProperties", "maxProperties", "minLength",
    "maxLength", "pattern", "minimum", "maximum", "default", "example", "propertyOrdering",
})
_SCHEMA_FORMATS = {"STRING": ("enum", "date-time"), "NUMBER": ("float", "double"), "INTEGER": ("int32", "int64")}


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a JSON Schema into Gemini's ``Schema`` (an OpenAPI 3.0 subset).

    Types are upper-cased; ``["x", "null"]`` and ``anyOf [x, null]`` become ``nullable``;
    local ``$ref``s are inlined (a recursive schema cannot be expressed and is refused);
    ``const`` becomes a one-value ``enum``; formats Gemini does not know are dropped.
    """
    defs = {k: v for key in ("definitions", "$defs") if isinstance(d := schema.get(key), Mapping) for k, v in d.items()}
    return _convert(schema, defs, ())


def _convert(schema: Any, defs: Mapping[str, Any], refs: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(schema, Mapping):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rpartition("/")[2]
        target = defs.get(name) if ref.startswith("#/") else None
        if not isinstance(target, Mapping):
            raise errors.UnsupportedFeatureError(f"schema reference {ref!r} cannot be resolved")
        if name in refs:
            raise errors.UnsupportedFeatureError(f"Gemini cannot express the recursive schema {name!r}")
        return _convert({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs, (*refs, name))
    out: dict[str, Any] = {k: v for k, v in schema.items() if k in _SCHEMA_KEYS}
    nullable = schema.get("nullable") is True
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null" and isinstance(k, str)]
        nullable = nullable or len(kinds) < len(kind)
        kind = kinds[0] if len(kinds) == 1 else None
        if len(kinds) > 1:
            out["anyOf"] = [{"type": k.upper()} for k in kinds]
    if isinstance(kind, str):
        out["type"] = kind.upper()
    values = [schema["const"]] if "const" in schema else schema.get("enum")
    if isinstance(values, list):
        nullable = nullable or None in values
        values = [v for v in values if v is not None]
        if values and all(isinstance(v, str) for v in values):
            out["enum"] = values
            out.setdefault("type", "STRING")
    fmt = schema.get("format")
    if fmt in _SCHEMA_FORMATS.get(out.get("type", ""), ()):
        out["format"] = fmt
    props = schema.get("properties")
    if isinstance(props, Mapping):
        out["properties"] = {name: _convert(sub, defs, refs) for name, sub in props.items()}
        required = [r for r in schema.get("required") or () if r in props]
        if required:
            out["required"] = required
    items = schema.get("items")
    if isinstance(items, list):
        items = items[0] if items else None
    if isinstance(items, Mapping):
        out["items"] = _convert(items, defs, refs)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list):
        real = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        nullable = nullable or len(real) < len(branches)
        if len(real) == 1:
            out = {**_convert(real[0], defs, refs), **out}
        elif real:
            out["anyOf"] = [_convert(b, defs, refs) for b in real]
    for sub in schema.get("allOf") or ():
        out = {**_convert(sub, defs, refs), **out}
    if nullable:
        out["nullable"] = True
    return out
