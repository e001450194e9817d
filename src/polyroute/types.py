"""The request, response and event types that application code depends on.

These types are the whole public vocabulary of polyroute: an application builds a
:class:`ChatRequest`, names a model by reference (``"openai:gpt-4o-mini"``) or alias,
and gets back a :class:`ChatResponse` or a stream of :class:`ChatStreamEvent`. Nothing
here knows about HTTP or any provider's wire format.

Requests are pydantic models because they are built from untrusted input (HTTP bodies,
config files) and must be validated once, at the edge. Stream events and attempt records
are slotted dataclasses because they are created once per token on the hot path, where a
validating constructor would cost more than the work it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from polyroute.errors import PolyrouteError

__all__ = [
    "Attempt",
    "ChatRequest",
    "ChatResponse",
    "ChatStreamEvent",
    "ContentPart",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FinishReason",
    "ImagePart",
    "Message",
    "ModelRef",
    "ResponseFormat",
    "Role",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class _Model(BaseModel):
    """Base for all public models: accept both snake_case and camelCase input.

    Validators are built on first use (``defer_build``), which keeps ``import polyroute``
    cheap for scripts; long-running servers call :func:`build_models` at start instead, so no
    request pays for it.
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=False, defer_build=True)


# --------------------------------------------------------------------------- messages


class TextPart(_Model):
    type: Literal["text"] = "text"
    text: str


class ImagePart(_Model):
    """An image given by URL or by base64 data (exactly one of the two)."""

    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = Field(default=None, description="base64-encoded bytes")
    media_type: str | None = Field(default=None, alias="mediaType")
    detail: Literal["auto", "low", "high"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImagePart:
        if (self.url is None) == (self.data is None):
            raise ValueError("an image part needs exactly one of 'url' or 'data'")
        if self.data is not None and self.media_type is None:
            raise ValueError("an image given as base64 'data' needs its 'media_type'")
        return self


ContentPart = TextPart | ImagePart


class ToolCall(_Model):
    """A call the model asked for.

    ``arguments`` is the parsed JSON object; ``raw_arguments`` is the exact string the
    provider sent, kept so that callers can echo it back byte for byte.
    """

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str = Field(default="", alias="rawArguments")


class Message(_Model):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, alias="toolCalls")
    tool_call_id: str | None = Field(default=None, alias="toolCallId")

    @model_validator(mode="after")
    def _check_role_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an 'assistant' message may carry 'tool_calls'")
        return self

    @property
    def text(self) -> str:
        """The message's text, with image parts left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str | list[ContentPart]) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str | None = None, *, tool_calls: list[ToolCall] | None = None) -> Message:
        return cls(role="assistant", content=content, tool_calls=tool_calls)

    @classmethod
    def tool(cls, tool_call_id: str, content: str, *, name: str | None = None) -> Message:
        return cls(role="tool", content=content, tool_call_id=tool_call_id, name=name)


# --------------------------------------------------------------------------- tools & formats


class Tool(_Model):
    """A function the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class NamedToolChoice(_Model):
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class ResponseFormat(_Model):
    """Ask for plain text, any JSON object, or JSON that matches ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = Field(default=None, alias="jsonSchema")
    name: str = "response"
    strict: bool = True

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("response_format type 'json_schema' needs 'json_schema'")
        return self


# --------------------------------------------------------------------------- model references


class ModelRef(_Model):
    """Which model to call: ``provider`` + ``model_id``, with optional per-model overrides.

    Written as ``"provider:model_id"`` (split at the first colon, so Ollama-style ids such as
    ``"ollama:llama3:8b"`` keep their tag) or in the object form
    ``{"provider", "modelId", "temperature", "maxTokens", "timeoutMs"}``. A bare name with no
    colon is an alias, resolved by the router from configuration.
    """

    provider: str
    model_id: str = Field(alias="modelId")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, alias="maxTokens", gt=0)
    timeout_ms: int | None = Field(default=None, alias="timeoutMs", gt=0)

    @classmethod
    def parse(cls, value: str | ModelRef | dict[str, Any]) -> ModelRef:
        if isinstance(value, ModelRef):
            return value
        if isinstance(value, dict):
            return cls.model_validate(value)
        provider, sep, model_id = value.partition(":")
        if not sep or not provider or not model_id:
            raise ValueError(f"model reference {value!r} is not of the form 'provider:model_id'")
        return cls(provider=provider.strip(), model_id=model_id.strip())

    def __str__(self) -> str:
        return f"{self.provider}:{self.model_id}"


ModelSpec = str | ModelRef


def _check_model_spec(value: Any) -> Any:
    if isinstance(value, dict):
        return ModelRef.model_validate(value)
    if isinstance(value, str) and not value.strip():
        raise ValueError("model must not be empty")
    return value


# --------------------------------------------------------------------------- requests


class ChatRequest(_Model):
    """One chat call. ``model`` is tried first, then each of ``fallbacks`` in order."""

    model: ModelSpec
    messages: list[Message] = Field(min_length=1)
    fallbacks: list[ModelSpec] = Field(default_factory=list)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = Field(default=None, alias="toolChoice")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, alias="topP", gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, alias="maxTokens", gt=0)
    stop: list[str] | None = None
    response_format: ResponseFormat | None = Field(default=None, alias="responseFormat")
    metadata: dict[str, str] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0.0, description="whole-call deadline, seconds")

    _check_model = field_validator("model", mode="before")(_check_model_spec)

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _check_fallbacks(cls, value: Any) -> Any:
        if isinstance(value, (str, dict, ModelRef)):
            value = [value]
        return [_check_model_spec(v) for v in value] if isinstance(value, list) else value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class EmbeddingRequest(_Model):
    model: ModelSpec
    input: list[str] = Field(min_length=1)
    fallbacks: list[ModelSpec] = Field(default_factory=list)
    dimensions: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0.0)

    _check_model = field_validator("model", mode="before")(_check_model_spec)

    @field_validator("input", mode="before")
    @classmethod
    def _input_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class Attempt:
    """What happened to one candidate during one call.

    ``outcome`` is ``"ok"`` (it answered), ``"error"`` (it was called and failed),
    ``"skipped"`` (it was never called: not configured, breaker open, ...), ``"cancelled"``
    (a hedged call that lost the race and was closed) or ``"resumed"`` (it continued a stream
    that another candidate broke off). ``note`` says why, in words, when the outcome alone
    does not (hedged, resumed, waited for a local rate limit, ...).
    """

    provider: str
    model: str
    outcome: Literal["ok", "error", "skipped", "cancelled", "resumed"]
    elapsed: float = 0.0
    error: str | None = None
    status: int | None = None
    message: str | None = None
    retry: int = 0
    waited: float = 0.0
    note: str | None = None
    #: token counts of this attempt: what it answered with, or what it was billed for without
    #: answering (a hedge loser, a stream cut short); summed into ``total_usage`` and cost
    usage: Usage | None = None
    #: True when ``usage`` is our estimate because the provider never reported one
    usage_estimated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "elapsedMs": round(self.elapsed * 1000, 3),
            "error": self.error,
            "status": self.status,
            "message": self.message,
            "retry": self.retry,
            "waitedMs": round(self.waited * 1000, 3),
            "note": self.note,
            "usage": self.usage.model_dump(by_alias=True) if self.usage is not None else None,
            "usageEstimated": self.usage_estimated,
        }


class Usage(_Model):
    prompt_tokens: int = Field(default=0, alias="promptTokens")
    completion_tokens: int = Field(default=0, alias="completionTokens")
    total_tokens: int = Field(default=0, alias="totalTokens")
    cached_tokens: int = Field(default=0, alias="cachedTokens")
    reasoning_tokens: int = Field(default=0, alias="reasoningTokens")

    def __add__(self, other: Usage) -> Usage:
        return Usage.model_construct(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )


def _billed(attempts: list[Attempt], usage: Usage) -> Usage:
    """The usage of every attempt that has one, summed; ``usage`` when none has (computed on
    demand, so a call whose total nobody reads pays nothing for it)."""
    billed = [a.usage for a in attempts if a.usage is not None]
    total = billed[0] if billed else usage
    for more in billed[1:]:
        total = total + more
    return total


class ChatResponse(_Model):
    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, defer_build=True)

    id: str = ""
    message: Message
    finish_reason: FinishReason = "stop"
    usage: Usage = Field(default_factory=Usage)
    provider: str = ""
    model: str = ""
    latency: float = 0.0
    attempts: list[Attempt] = Field(default_factory=list)
    #: USD for this call summed over its attempts, when the router has a price table
    cost: float | None = None

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def total_usage(self) -> Usage:
        """Tokens summed over every attempt a provider billed: ``usage`` plus hedge losers and
        streams cut short before a resume (estimated where the provider never said)."""
        return _billed(self.attempts, self.usage)


class EmbeddingResponse(_Model):
    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, defer_build=True)

    vectors: list[list[float]]
    usage: Usage = Field(default_factory=Usage)
    provider: str = ""
    model: str = ""
    latency: float = 0.0
    attempts: list[Attempt] = Field(default_factory=list)
    cost: float | None = None

    @property
    def total_usage(self) -> Usage:
        """As :attr:`ChatResponse.total_usage`."""
        return _billed(self.attempts, self.usage)


StreamEventType = Literal["token", "tool_call", "usage", "end", "error"]


@dataclass(slots=True)
class ChatStreamEvent:
    """One event of a streamed chat.

    - ``token``: ``delta`` holds new text, exactly as the provider sent it.
    - ``tool_call``: ``tool_call`` holds one complete, parsed call.
    - ``usage``: ``usage`` holds the token counts.
    - ``end``: the stream finished normally; ``finish_reason`` and ``response`` (the whole
      assembled reply with attempts) are set. ``done`` is true.
    - ``error``: the stream failed after output had reached the caller; ``error`` holds the
      typed exception (which the iterator raises right after). ``done`` is true.

    The first event a router stream yields also names the candidate answering (``provider``,
    ``model``, as registered) and carries ``attempts``: what was tried or skipped before it,
    so a server can report the routing in its response headers before the body starts.
    """

    type: StreamEventType
    delta: str = ""
    tool_call: ToolCall | None = None
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    error: PolyrouteError | None = None
    response: ChatResponse | None = None
    provider: str = ""
    model: str = ""
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.type in {"end", "error"}


def build_models() -> None:
    """Build every public model's validator now rather than on its first use."""
    for model in (TextPart, ImagePart, ToolCall, Message, Tool, NamedToolChoice, ResponseFormat, ModelRef,
                  ChatRequest, EmbeddingRequest, Usage, ChatResponse, EmbeddingResponse):
        model.model_rebuild(force=True)
