"""Request bodies of the agents/sessions/messages API, as pydantic models.

Field names are camelCase on the wire (snake_case is accepted too) and unknown fields are
rejected, so a typo such as ``fallbakModel`` is a 422 naming the field rather than a setting
silently ignored. Model references are checked when an agent is saved, not when it is first
used: a malformed ``provider:model`` or an alias the router does not know is a 422 with the
field's path (the router's aliases arrive through the validation context).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from polyroute.types import ContentPart, Message, ModelRef, Tool

__all__ = [
    "AgentConfig",
    "AgentCreate",
    "AgentPatch",
    "MessagePost",
    "ModelSpecField",
    "SessionCreate",
    "check_model_spec",
    "tool_schema",
]

MODEL_SPEC_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "description": "'provider:model_id' (e.g. 'openai:gpt-4o-mini') or a configured alias"},
        {"$ref": "#/components/schemas/ModelRef"},
    ]
}


def check_model_spec(value: Any, info: ValidationInfo) -> str | dict[str, Any]:
    """A model reference as stored: the trimmed string, or the object form as a camelCase dict.

    ``info`` must stay a required parameter: pydantic decides from the signature whether to
    pass it, and the router's aliases arrive in ``info.context``.
    """
    if isinstance(value, str):
        spec = value.strip()
        if not spec:
            raise ValueError("the model reference must not be empty")
        if ":" in spec:
            provider, _, model_id = spec.partition(":")
            if not provider.strip() or not model_id.strip():
                raise ValueError(f"{spec!r} is not of the form 'provider:model_id'")
            return spec
        aliases = (info.context or {}).get("aliases")
        if aliases is not None and spec not in aliases:
            known = ", ".join(sorted(aliases)) or "none are configured"
            raise ValueError(f"unknown model alias {spec!r} (aliases: {known}); use 'provider:model_id' or an alias")
        return spec
    if isinstance(value, dict):
        try:
            ref = ModelRef.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'model'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise ValueError(f"invalid model object ({problems})") from None
        return ref.model_dump(by_alias=True, exclude_none=True)
    raise ValueError("expected a 'provider:model_id' string, an alias, or an object {provider, modelId, ...}")


ModelSpecField = Annotated[Any, PlainValidator(check_model_spec), WithJsonSchema(MODEL_SPEC_SCHEMA)]


def _unwrap_openai_tool(value: Any) -> Any:
    """Accept OpenAI's ``{"type": "function", "function": {...}}`` as well as our own tool shape."""
    if (
        isinstance(value, dict)
        and isinstance(value.get("function"), dict)
        and value.get("type", "function") == "function"
    ):
        return value["function"]
    return value


ToolSpec = Annotated[Tool, BeforeValidator(_unwrap_openai_tool)]


def tool_schema(tool: Tool) -> dict[str, Any]:
    return tool.model_dump(exclude_none=True)


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class AgentConfig(_Body):
    """How an agent calls its model: fallbacks, system prompt, sampling, history window."""

    fallback_model: ModelSpecField | None = Field(default=None, description="one fallback model")
    fallback_models: list[ModelSpecField] | None = Field(default=None, description="fallbacks, tried in order")
    system_prompt: str | None = Field(default=None, description="sent first, before the history")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    history_token_window: int | None = Field(
        default=None, gt=0, description="estimated tokens of history sent per call (about 4 characters per token)"
    )
    timeout_ms: int | None = Field(default=None, gt=0, description="whole-call deadline, milliseconds")

    def stored(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class AgentCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    model: ModelSpecField
    tools: list[ToolSpec] = Field(default_factory=list)
    config: AgentConfig = Field(default_factory=AgentConfig)


class AgentPatch(_Body):
    """Fields to change; ``config`` keys are merged into the stored config (``null`` removes one)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    model: ModelSpecField | None = None
    tools: list[ToolSpec] | None = None
    config: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _not_null(self) -> AgentPatch:
        for field in ("name", "model", "tools"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"'{field}' cannot be null")
        return self


class SessionCreate(_Body):
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


def _text_length(content: str | list[ContentPart] | None) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    return sum(len(p.text) for p in content if p.type == "text")


class MessagePost(_Body):
    """One message (``role`` + ``content``) or several (``messages``) to append before the call."""

    role: Literal["user", "tool"] = "user"
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    stream: bool = False

    @field_validator("content")
    @classmethod
    def _content(cls, value: str | list[ContentPart] | None, info: ValidationInfo) -> str | list[ContentPart] | None:
        if value is not None and not value:
            raise ValueError("content must not be empty")
        limit = (info.context or {}).get("max_chars")
        if limit is not None and _text_length(value) > limit:
            raise ValueError(f"content is longer than {limit} characters")
        return value

    @field_validator("messages")
    @classmethod
    def _messages(cls, value: list[Message] | None, info: ValidationInfo) -> list[Message] | None:
        limit = (info.context or {}).get("max_chars")
        for i, msg in enumerate(value or ()):
            if msg.role not in ("user", "tool"):
                raise ValueError(f"messages[{i}]: role must be 'user' or 'tool', not {msg.role!r}")
            if limit is not None and _text_length(msg.content) > limit:
                raise ValueError(f"messages[{i}]: content is longer than {limit} characters")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> MessagePost:
        if self.messages is not None:
            if {"content", "role", "name", "tool_call_id"} & self.model_fields_set:
                raise ValueError("send either 'messages' or a single message ('role', 'content'), not both")
            return self
        if self.content is None:
            raise ValueError("'content' is required (or send 'messages': [...])")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs 'toolCallId'")
        return self

    def to_messages(self) -> list[Message]:
        if self.messages is not None:
            return self.messages
        return [Message(role=self.role, content=self.content, name=self.name, tool_call_id=self.tool_call_id)]
