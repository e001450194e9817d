"""Stored records as the API's JSON, plus the JSON response class and pagination helpers.

Responses are built as plain dicts and encoded with orjson: the records are already
trusted, so passing them through pydantic models again would only add cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from polyroute.runtime.body import invalid_field
from polyroute.storage import AgentRecord, MessageRecord, SessionRecord

__all__ = [
    "JSONResponse",
    "agent_json",
    "iso",
    "message_json",
    "page",
    "page_params",
    "session_json",
]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def agent_json(agent: AgentRecord) -> dict[str, Any]:
    return {
        "agentId": agent.id,
        "name": agent.name,
        "description": agent.description,
        "model": agent.model,
        "tools": agent.tools,
        "config": agent.config,
        "createdAt": iso(agent.created_at),
        "updatedAt": iso(agent.updated_at),
    }


def session_json(session: SessionRecord) -> dict[str, Any]:
    return {
        "sessionId": session.id,
        "agentId": session.agent_id,
        "userId": session.user_id,
        "metadata": session.metadata,
        "state": session.state,
        "messageCount": session.last_seq,
        "lastError": session.last_error,
        "createdAt": iso(session.created_at),
        "updatedAt": iso(session.updated_at),
    }


_USAGE_KEYS = ("promptTokens", "completionTokens", "totalTokens", "cachedTokens", "reasoningTokens")


def total_usage(message: MessageRecord) -> dict[str, Any] | None:
    """Tokens summed over the reply's attempts (hedge losers, broken streams), else its own usage."""
    billed = [a["usage"] for a in message.attempts or () if isinstance(a, dict) and isinstance(a.get("usage"), dict)]
    if not billed:
        return message.usage
    return {key: sum(int(u.get(key) or 0) for u in billed) for key in _USAGE_KEYS}


def message_json(message: MessageRecord) -> dict[str, Any]:
    return {
        "messageId": message.id,
        "sessionId": message.session_id,
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "name": message.name,
        "toolCalls": message.tool_calls,
        "toolCallId": message.tool_call_id,
        "finishReason": message.finish_reason,
        "usage": message.usage,
        "totalUsage": total_usage(message),
        "provider": message.provider,
        "model": message.model,
        "attempts": message.attempts,
        "status": message.status,
        "error": message.error,
        "createdAt": iso(message.created_at),
    }


def page_params(request: Request, *, default: int = 20) -> tuple[int, str | None]:
    """``(limit, cursor)`` from the query string; 422 for a limit that is not 1..maxPageSize."""
    query: Mapping[str, str] = request.query_params
    maximum = request.app.state.runtime.settings.max_page_size
    raw = query.get("limit")
    limit = min(default, maximum)
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise invalid_field(("query", "limit"), "limit must be an integer", "int_parsing") from None
        if not 1 <= limit <= maximum:
            raise invalid_field(("query", "limit"), f"limit must be between 1 and {maximum}", "less_than_equal")
    cursor = query.get("cursor") or None
    return limit, cursor


def page(items: list[dict[str, Any]], limit: int, cursor_key: str) -> dict[str, Any]:
    """``{"data", "nextCursor", "hasMore"}``; the store was asked for ``limit + 1`` items.

    The cursor is the ``cursor_key`` field of the last item returned (an id, or a sequence
    number for messages), so the next page starts right after it.
    """
    more = len(items) > limit
    data = items[:limit]
    return {"data": data, "nextCursor": str(data[-1][cursor_key]) if more else None, "hasMore": more}
