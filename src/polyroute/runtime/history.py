"""What an agent sends its model: system prompt, trimmed history, the new messages.

Trimming uses a deliberately cheap token estimate: about four characters per token (the
usual rule of thumb for English text with BPE tokenizers) plus four tokens of framing per
message, rounded up. It never calls a tokenizer, so it costs nothing per turn and works the
same for every provider; it over-counts code and under-counts some scripts, which is why the
window (``config.historyTokenWindow``) should leave headroom below the model's real limit.

The rule: the system prompt always goes first and the new messages always go last; stored
history fills what is left of the window, newest first, and is cut at a user message so the
model never sees a tool result or a reply without the message that led to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from polyroute.storage import AgentRecord, MessageRecord
from polyroute.types import ChatRequest, Message, ModelRef, ModelSpec, Tool

__all__ = ["build_context", "chat_request", "estimate_tokens", "fallbacks_of", "model_spec"]

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def _chars(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    total = 0
    for part in content:
        text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
        # an image costs tokens too; count it as a fixed-size blob rather than by its URL
        total += len(text) if isinstance(text, str) else 1000
    return total


def estimate_tokens(content: Any, tool_calls: Sequence[Any] | None = None) -> int:
    chars = _chars(content)
    for call in tool_calls or ():
        raw = call.get("rawArguments") if isinstance(call, dict) else getattr(call, "raw_arguments", "")
        chars += len(raw or "") + 20
    return TOKENS_PER_MESSAGE + -(-chars // CHARS_PER_TOKEN)


def _as_message(record: MessageRecord) -> Message:
    return Message.model_validate(
        {
            "role": record.role,
            "content": record.content,
            "name": record.name,
            "toolCalls": record.tool_calls,
            "toolCallId": record.tool_call_id,
        }
    )


def build_context(
    history: Sequence[MessageRecord], new: Sequence[Message], *, system_prompt: str | None, window: int
) -> list[Message]:
    """System prompt, then as much recent history as fits ``window`` estimated tokens, then ``new``."""
    head = [Message.system(system_prompt)] if system_prompt else []
    budget = window - sum(estimate_tokens(m.content, m.tool_calls) for m in (*head, *new))
    kept: list[MessageRecord] = []
    for record in reversed(history):
        if not record.content and not record.tool_calls:
            continue  # an interrupted reply that produced nothing
        cost = estimate_tokens(record.content, record.tool_calls)
        if cost > budget:
            break
        budget -= cost
        kept.append(record)
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)
    return [*head, *(_as_message(r) for r in kept), *new]


def model_spec(value: str | dict[str, Any]) -> ModelSpec:
    return ModelRef.model_validate(value) if isinstance(value, dict) else value


def fallbacks_of(config: dict[str, Any]) -> list[ModelSpec]:
    """``fallbackModel`` then ``fallbackModels``, in that order (the router drops repeats)."""
    specs: list[ModelSpec] = []
    if config.get("fallbackModel"):
        specs.append(model_spec(config["fallbackModel"]))
    specs.extend(model_spec(v) for v in config.get("fallbackModels") or ())
    return specs


def chat_request(agent: AgentRecord, messages: list[Message], *, session_id: str | None = None) -> ChatRequest:
    """The router request for one turn; ``session_id`` keeps a session on one deployment when balancing."""
    config = agent.config
    timeout_ms = config.get("timeoutMs")
    return ChatRequest(
        model=model_spec(agent.model),
        fallbacks=fallbacks_of(config),
        messages=messages,
        tools=[Tool.model_validate(t) for t in agent.tools] or None,
        temperature=config.get("temperature"),
        max_tokens=config.get("maxTokens"),
        timeout=timeout_ms / 1000 if timeout_ms else None,
        metadata={"session_id": session_id} if session_id else {},
    )
