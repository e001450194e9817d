"""Message-list shaping shared by wire formats that want alternating turns.

Anthropic, Bedrock Converse and Gemini all take the system prompt out of the message list and
require user/assistant turns to alternate, so consecutive messages of one role (a user message
followed by tool results, say) are merged into one turn. Each format differs only in how one
message becomes blocks, which it passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from polyroute.types import ContentPart, ImagePart, Message, TextPart

__all__ = ["append_turn", "split_system", "text_and_images"]

Blocks = list[dict[str, Any]]


def append_turn(turns: list[dict[str, Any]], role: str, blocks: Blocks, *, key: str = "content") -> None:
    """Add ``blocks`` as a ``role`` turn, merged into the previous turn when it has that role."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(blocks)
    else:
        turns.append({"role": role, key: blocks})


def split_system(
    messages: Iterable[Message], turn: Callable[[Message], tuple[str, Blocks]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """(the system texts, the alternating turns) of ``messages``; ``turn`` maps one message."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            if message.text:
                system.append(message.text)
            continue
        role, blocks = turn(message)
        append_turn(turns, role, blocks)
    return system, turns


def text_and_images(content: str | list[ContentPart] | None, image: Callable[[ImagePart], dict[str, Any]]) -> Blocks:
    """``{"text": ...}`` blocks for text (empty text dropped) and ``image(part)`` for images."""
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    return [
        {"text": p.text} if isinstance(p, TextPart) else image(p)
        for p in content
        if not isinstance(p, TextPart) or p.text
    ]
