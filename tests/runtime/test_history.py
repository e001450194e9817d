"""Building the model's context: system prompt first, history trimmed to the token window."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from polyroute.runtime.history import build_context, chat_request, estimate_tokens
from polyroute.storage import AgentRecord, MessageRecord
from polyroute.types import Message, ModelRef


def record(seq: int, role: str, content: Any, **kw: Any) -> MessageRecord:
    fields: dict[str, Any] = {
        "name": None,
        "tool_calls": None,
        "tool_call_id": None,
        "finish_reason": None,
        "usage": None,
        "provider": None,
        "model": None,
        "attempts": None,
        "status": "complete",
        "error": None,
    }
    fields.update(kw)
    return MessageRecord(
        id=f"m{seq}", session_id="s", seq=seq, role=role, content=content, created_at=datetime.now(UTC), **fields
    )


def test_estimate_is_a_quarter_of_the_characters_plus_framing() -> None:
    assert estimate_tokens("") == 4
    assert estimate_tokens("abcd") == 5
    assert estimate_tokens("abcde") == 6
    assert estimate_tokens([{"type": "text", "text": "abcd"}]) == 5


def test_everything_fits() -> None:
    history = [record(1, "user", "a"), record(2, "assistant", "b")]
    out = build_context(history, [Message.user("c")], system_prompt="sys", window=1000)
    assert [(m.role, m.text) for m in out] == [("system", "sys"), ("user", "a"), ("assistant", "b"), ("user", "c")]


def test_oldest_turns_are_dropped_first_and_the_cut_lands_on_a_user_message() -> None:
    history = [record(i + 1, "user" if i % 2 == 0 else "assistant", "x" * 40) for i in range(6)]
    # each stored message costs 4 + 10 = 14; the new one and the prompt cost 5 each
    out = build_context(history, [Message.user("new!")], system_prompt="sys!", window=5 + 5 + 14 * 3)
    kept = [m for m in out[1:-1]]
    assert len(kept) == 2  # three would fit, but the oldest of them was an assistant reply
    assert kept[0].role == "user"
    assert out[0].role == "system" and out[-1].text == "new!"


def test_new_messages_are_always_sent_even_over_the_window() -> None:
    out = build_context([record(1, "user", "old")], [Message.user("y" * 400)], system_prompt=None, window=10)
    assert [m.text for m in out] == ["y" * 400]


def test_empty_interrupted_replies_are_skipped() -> None:
    history = [record(1, "user", "a"), record(2, "assistant", None, status="incomplete")]
    out = build_context(history, [Message.user("b")], system_prompt=None, window=1000)
    assert [m.text for m in out] == ["a", "b"]


def test_chat_request_uses_the_agent_model_and_fallbacks() -> None:
    now = datetime.now(UTC)
    agent = AgentRecord(
        "a",
        "",
        "n",
        None,
        {"provider": "fake", "modelId": "m", "temperature": 0.1},
        [{"name": "t"}],
        {"fallbackModel": "fake:one", "fallbackModels": ["fake:two"], "maxTokens": 7, "timeoutMs": 1500},
        now,
        now,
    )
    request = chat_request(agent, [Message.user("x")])
    assert request.model == ModelRef(provider="fake", model_id="m", temperature=0.1)
    assert request.fallbacks == ["fake:one", "fake:two"]
    assert request.max_tokens == 7
    assert request.timeout == 1.5
    assert request.tools is not None and request.tools[0].name == "t"
