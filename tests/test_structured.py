"""polyroute.structured: JSON answers parsed and validated the same way for every provider."""

from __future__ import annotations

import pytest

from polyroute import errors
from polyroute.structured import parse_json_response, validate_json
from polyroute.types import ChatResponse, Message, ResponseFormat

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "temp": {"type": "number", "minimum": -90},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "temp"],
    "additionalProperties": False,
}


def reply(text: str) -> ChatResponse:
    return ChatResponse(message=Message.assistant(text), provider="openai", model="gpt-4o-mini")


def test_valid_answer_is_parsed() -> None:
    assert parse_json_response(reply('{"city": "Oslo", "temp": 3.5}'), SCHEMA) == {"city": "Oslo", "temp": 3.5}


def test_response_format_supplies_the_schema() -> None:
    fmt = ResponseFormat(type="json_schema", json_schema=SCHEMA)
    with pytest.raises(errors.StructuredOutputError):
        parse_json_response(reply('{"city": "Oslo"}'), fmt)
    assert parse_json_response("[1, 2]", ResponseFormat(type="text")) == [1, 2]
    with pytest.raises(errors.StructuredOutputError, match="not a JSON object"):
        parse_json_response("[1, 2]", ResponseFormat(type="json_object"))


def test_violations_are_listed_with_paths_and_where_they_came_from() -> None:
    with pytest.raises(errors.StructuredOutputError) as caught:
        parse_json_response(reply('{"city": 5, "temp": -100, "tags": ["a", 1], "extra": true}'), SCHEMA)
    exc = caught.value
    assert (exc.provider, exc.model, exc.retryable, exc.fallback) == ("openai", "gpt-4o-mini", True, True)
    assert not isinstance(exc, errors.BadRequestError)
    joined = "\n".join(exc.problems)
    assert "$.city: 5 is not of type 'string'" in joined
    assert "$.temp: -100 is less than the minimum of -90" in joined
    assert "$.tags[1]: 1 is not of type 'string'" in joined
    assert "'extra' was unexpected" in joined
    assert "and 3 more" in exc.message
    assert exc.details()["problems"] == exc.problems


def test_not_json_is_a_structured_output_error() -> None:
    with pytest.raises(errors.StructuredOutputError, match="not valid JSON"):
        parse_json_response(reply("Sure! Here is the JSON: {"), SCHEMA)


def test_one_code_fence_is_unwrapped() -> None:
    assert parse_json_response('```json\n{"city": "Rome", "temp": 20}\n```', SCHEMA)["city"] == "Rome"
    assert parse_json_response("```\n[1]\n```") == [1]


def test_invalid_schema_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="schema itself is invalid"):
        validate_json({}, {"type": "no-such-type"})


def test_draft_7_schema_uses_draft_7_rules() -> None:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "items": [{"type": "integer"}]}
    validate_json([1, "anything"], draft7)  # tuple validation of the first item only
    with pytest.raises(errors.StructuredOutputError):
        validate_json(["x"], draft7)
