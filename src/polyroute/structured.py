"""Structured output, checked: parse a reply's JSON and validate it against the requested schema.

Every provider maps ``response_format`` to its own native feature (OpenAI ``json_schema``,
Gemini ``responseSchema``, a forced tool for Anthropic and Bedrock...), but not every one
enforces the schema, and none promises to. :func:`parse_json_response` is the one place that
checks the answer, the same way whichever provider served it. It is a function for callers
and the runtime, not something the router does on every call: the router stays policy-only.

Validation uses the ``jsonschema`` library (``pip install 'polyroute[structured]'``), with
the draft the schema declares (``$schema``) or the newest one it knows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from polyroute import errors
from polyroute.types import ChatResponse, ResponseFormat

__all__ = ["parse_json_response", "validate_json"]

_FENCE = re.compile(r"\A\s*```(?:json|JSON)?[ \t]*\r?\n(?P<body>.*?)\r?\n?```\s*\Z", re.S)
_VALIDATORS: dict[bytes, Any] = {}
_MAX_CACHED = 256
_MAX_PROBLEMS = 20


def _validator(schema: Mapping[str, Any]) -> Any:
    """A compiled validator for ``schema``, cached by the schema's canonical JSON."""
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raise errors.ConfigError("the JSON schema is not JSON-serialisable") from None
    found = _VALIDATORS.get(key)
    if found is not None:
        return found
    try:
        import jsonschema
        from jsonschema.exceptions import SchemaError
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise errors.ConfigError(
            "validating structured output needs jsonschema: pip install 'polyroute[structured]'"
        ) from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise errors.ConfigError(f"the JSON schema itself is invalid: {exc.message}") from None
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    if len(_VALIDATORS) >= _MAX_CACHED:
        _VALIDATORS.clear()
    _VALIDATORS[key] = validator
    return validator


def validate_json(
    value: Any, schema: Mapping[str, Any], *, provider: str | None = None, model: str | None = None
) -> None:
    """Raise :class:`~polyroute.errors.StructuredOutputError` listing how ``value`` breaks ``schema``."""
    problems = [
        f"{err.json_path}: {err.message}"
        for err in sorted(_validator(schema).iter_errors(value), key=lambda e: (list(e.path), e.message))
    ]
    if problems:
        raise errors.StructuredOutputError(
            f"the model's JSON does not match the schema: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems=problems[:_MAX_PROBLEMS],
            provider=provider,
            model=model,
        )


def parse_json_response(response: ChatResponse | str, schema: Mapping[str, Any] | ResponseFormat | None = None) -> Any:
    """The reply's JSON value, validated against ``schema`` when one is given.

    ``schema`` is a JSON Schema or the request's :class:`~polyroute.types.ResponseFormat`
    (whose ``json_schema`` is used; ``json_object`` only requires a JSON object). A reply
    wrapped in one Markdown code fence (some models add one) is unwrapped first. Raises
    :class:`~polyroute.errors.StructuredOutputError` for text that is not JSON or does not
    match, and :class:`~polyroute.errors.ConfigError` for a schema that is itself invalid.
    """
    provider = model = None
    if isinstance(response, ChatResponse):
        provider, model = response.provider or None, response.model or None
        text = response.text
    else:
        text = response
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced["body"]
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise errors.StructuredOutputError(
            f"the model's answer is not valid JSON: {exc}", problems=[f"$: {exc}"], provider=provider, model=model
        ) from None
    if isinstance(schema, ResponseFormat):
        if schema.type == "json_object" and not isinstance(value, dict):
            raise errors.StructuredOutputError(
                "the model's answer is not a JSON object", problems=["$: not an object"], provider=provider, model=model
            )
        schema = schema.json_schema if schema.type == "json_schema" else None
    if schema is not None:
        validate_json(value, schema, provider=provider, model=model)
    return value
