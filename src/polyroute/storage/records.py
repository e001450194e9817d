"""What the store hands back: plain slotted records, and the storage-level errors.

Records are dataclasses, not pydantic models: they come from trusted rows, and the runtime
turns them into JSON itself, so validation would only cost time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "AgentRecord",
    "MessageRecord",
    "MessageStatus",
    "NewMessage",
    "SessionBusyError",
    "SessionGoneError",
    "SessionRecord",
    "SessionState",
    "StorageBusyError",
    "StorageError",
    "utc",
]

SessionState = Literal["active", "error"]
MessageStatus = Literal["complete", "incomplete", "error"]


def utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC, so say so."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(slots=True)
class AgentRecord:
    id: str
    owner_hash: str
    name: str
    description: str | None
    #: a ``"provider:model"`` string, an alias, or the object form as a dict (camelCase keys)
    model: str | dict[str, Any]
    tools: list[dict[str, Any]]
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class SessionRecord:
    id: str
    agent_id: str
    owner_hash: str
    user_id: str | None
    metadata: dict[str, Any]
    state: SessionState
    last_seq: int
    last_error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class NewMessage:
    """A message to append; ``seq``, ``id`` and ``created_at`` are assigned by the store."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    provider: str | None = None
    model: str | None = None
    attempts: list[dict[str, Any]] | None = None
    status: MessageStatus = "complete"
    error: dict[str, Any] | None = None
    #: set to pre-assign the id (so a streamed reply's id is known before it is stored)
    id: str | None = None


@dataclass(slots=True)
class MessageRecord:
    id: str
    session_id: str
    seq: int
    role: str
    content: str | list[dict[str, Any]] | None
    name: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    finish_reason: str | None
    usage: dict[str, Any] | None
    provider: str | None
    model: str | None
    attempts: list[dict[str, Any]] | None
    status: MessageStatus
    error: dict[str, Any] | None
    created_at: datetime


class StorageError(Exception):
    """Base of the errors the store raises on purpose (as opposed to driver errors)."""

    code = "storage_error"


class SessionBusyError(StorageError):
    """The session's lock could not be taken in time: another message is still being answered."""

    code = "session_busy"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageBusyError(StorageError):
    """Every connection set aside for session locks is in use: too many sessions are busy at once."""

    code = "too_many_active_sessions"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionGoneError(StorageError):
    """The session was deleted while a message for it was being answered."""

    code = "session_deleted"


@dataclass(slots=True)
class Turn:
    """The result of :meth:`Store.record_turn`: the stored messages and the session after."""

    messages: list[MessageRecord] = field(default_factory=list)
    session: SessionRecord | None = None
