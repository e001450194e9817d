"""Replies in Ollama's native wire format, for :class:`~fakes.upstream.FakeUpstream`.

Shapes follow Ollama's API docs: ``/api/chat`` answers with one JSON object when
``"stream": false`` and otherwise with NDJSON (``application/x-ndjson``, one object per line,
the last one ``"done": true`` with ``done_reason`` and the token counts); errors are
``{"error": "..."}`` with a 4xx/5xx status, or a line ``{"error": "..."}`` once a stream has
started; ``/api/embed`` answers ``{"model", "embeddings": [[...]], "prompt_eval_count"}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from fakes.upstream import Pause, Reply

__all__ = [
    "chat_reply",
    "chat_stream",
    "done_line",
    "embed_reply",
    "error_reply",
    "message_line",
    "ndjson_reply",
    "rechunk",
]

CREATED_AT = "2024-07-22T20:33:28.123648Z"
NDJSON = "application/x-ndjson"


def _message(content: str, tool_calls: list[dict[str, Any]] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return message


def _stats(prompt_eval_count: int, eval_count: int) -> dict[str, Any]:
    return {
        "total_duration": 885095291,
        "load_duration": 3753500,
        "prompt_eval_count": prompt_eval_count,
        "prompt_eval_duration": 328493000,
        "eval_count": eval_count,
        "eval_duration": 552222000,
    }


def chat_reply(
    content: str = "Hello! How are you today?",
    *,
    model: str = "llama3.2",
    done_reason: str = "stop",
    prompt_eval_count: int = 26,
    eval_count: int = 7,
    tool_calls: list[dict[str, Any]] | None = None,
) -> Reply:
    """A non-streaming ``/api/chat`` answer."""
    body = {
        "model": model,
        "created_at": CREATED_AT,
        "message": _message(content, tool_calls),
        "done_reason": done_reason,
        "done": True,
        **_stats(prompt_eval_count, eval_count),
    }
    return Reply.json(body)


def message_line(content: str, *, model: str = "llama3.2", tool_calls: list[dict[str, Any]] | None = None) -> bytes:
    """One ``"done": false`` stream line carrying ``content``."""
    line = {"model": model, "created_at": CREATED_AT, "message": _message(content, tool_calls), "done": False}
    return orjson.dumps(line) + b"\n"


def done_line(
    *, model: str = "llama3.2", done_reason: str = "stop", prompt_eval_count: int = 26, eval_count: int = 3
) -> bytes:
    """The final stream line: empty message, ``done: true``, reason and counts."""
    line = {
        "model": model,
        "created_at": CREATED_AT,
        "message": _message("", None),
        "done": True,
        "done_reason": done_reason,
        **_stats(prompt_eval_count, eval_count),
    }
    return orjson.dumps(line) + b"\n"


def rechunk(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into ``size``-byte pieces, so lines (and UTF-8 characters) span TCP reads."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def ndjson_reply(pieces: Iterable[bytes | Pause], *, status: int = 200, disconnect: bool = False) -> Reply:
    """A chunked NDJSON body written exactly as given (one write per piece)."""
    return Reply(
        status=status, headers={"content-type": NDJSON}, body=list(pieces), chunked=True, disconnect=disconnect
    )


def chat_stream(
    pieces: Iterable[str],
    *,
    model: str = "llama3.2",
    done_reason: str = "stop",
    prompt_eval_count: int = 26,
    eval_count: int | None = None,
    split: int | None = None,
    done: bool = True,
    tail: bytes = b"",
    disconnect: bool = False,
) -> Reply:
    """A streamed ``/api/chat`` answer: one line per piece, then the ``done`` line.

    ``split`` re-cuts the whole body into pieces of that many bytes; ``done=False`` leaves the
    final line out (a truncated stream); ``tail`` is appended raw after the last line.
    """
    texts = list(pieces)
    body = b"".join(message_line(t, model=model) for t in texts)
    if done:
        count = len(texts) if eval_count is None else eval_count
        body += done_line(model=model, done_reason=done_reason, prompt_eval_count=prompt_eval_count, eval_count=count)
    body += tail
    return ndjson_reply(rechunk(body, split) if split else [body], disconnect=disconnect)


def embed_reply(vectors: list[list[float]], *, model: str = "all-minilm", prompt_eval_count: int = 8) -> Reply:
    return Reply.json(
        {
            "model": model,
            "embeddings": vectors,
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": prompt_eval_count,
        }
    )


def error_reply(status: int, message: str) -> Reply:
    """Ollama's error body: ``{"error": "..."}`` and nothing else."""
    return Reply.json({"error": message}, status=status)
