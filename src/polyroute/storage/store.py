"""Reading and writing agents, sessions and messages.

Every method is one short transaction: no transaction is ever held open while a model is
being called (the runtime reads history, releases the connection, calls the router, then
comes back with :meth:`Store.record_turn`). Ownership is part of every query: a row that
belongs to another key is indistinguishable from a row that does not exist.

Writes that must not interleave (appending a turn) also lock the session row: ``SELECT ...
FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite (see :mod:`.engine`). That keeps
sequence numbers gapless and unique even without the per-session turn lock of
:mod:`.locks`; the turn lock is what keeps *history* consistent (each reply sees the turn
before it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from polyroute.storage.engine import WRITE, is_postgres
from polyroute.storage.records import (
    AgentRecord,
    MessageRecord,
    NewMessage,
    SessionGoneError,
    SessionRecord,
    SessionState,
    Turn,
    utc,
)
from polyroute.storage.schema import agents, messages, new_id, sessions

__all__ = ["Store"]

_AGENT_FIELDS = frozenset({"name", "description", "model", "tools", "config"})


def _now() -> datetime:
    return datetime.now(UTC)


def _agent(m: RowMapping | Mapping[str, Any]) -> AgentRecord:
    return AgentRecord(
        id=m["id"],
        owner_hash=m["owner_hash"],
        name=m["name"],
        description=m["description"],
        model=m["model"],
        tools=m["tools"],
        config=m["config"],
        created_at=utc(m["created_at"]),
        updated_at=utc(m["updated_at"]),
    )


def _session(m: RowMapping | Mapping[str, Any]) -> SessionRecord:
    return SessionRecord(
        id=m["id"],
        agent_id=m["agent_id"],
        owner_hash=m["owner_hash"],
        user_id=m["user_id"],
        metadata=m["meta"],
        state=m["state"],
        last_seq=m["last_seq"],
        last_error=m["last_error"],
        created_at=utc(m["created_at"]),
        updated_at=utc(m["updated_at"]),
    )


def _message(m: RowMapping | Mapping[str, Any]) -> MessageRecord:
    return MessageRecord(
        id=m["id"],
        session_id=m["session_id"],
        seq=m["seq"],
        role=m["role"],
        content=m["content"],
        name=m["name"],
        tool_calls=m["tool_calls"],
        tool_call_id=m["tool_call_id"],
        finish_reason=m["finish_reason"],
        usage=m["usage"],
        provider=m["provider"],
        model=m["model"],
        attempts=m["attempts"],
        status=m["status"],
        error=m["error"],
        created_at=utc(m["created_at"]),
    )


class Store:
    """All queries, over one :class:`AsyncEngine`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{WRITE: True})
        self._postgres = is_postgres(engine)
        # SQLite has one writer at a time; writers that wait in its busy handler sleep in growing
        # steps (up to 100 ms), so queue them here instead, in order and without sleeping.
        self._write_lock: asyncio.Lock | None = None if self._postgres else asyncio.Lock()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite, queued in process)."""
        if self._write_lock is None:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # ------------------------------------------------------------------ agents

    async def create_agent(
        self,
        owner: str,
        *,
        name: str,
        description: str | None,
        model: str | dict[str, Any],
        tools: list[dict[str, Any]],
        config: dict[str, Any],
    ) -> AgentRecord:
        now = _now()
        record = AgentRecord(new_id("agent"), owner, name, description, model, tools, config, now, now)
        async with self._write() as conn:
            await conn.execute(
                agents.insert().values(
                    id=record.id,
                    owner_hash=owner,
                    name=name,
                    description=description,
                    model=model,
                    tools=tools,
                    config=config,
                    created_at=now,
                    updated_at=now,
                )
            )
        return record

    async def get_agent(self, owner: str, agent_id: str) -> AgentRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(agents).where(agents.c.id == agent_id, agents.c.owner_hash == owner))
            ).first()
        return _agent(row._mapping) if row is not None else None

    async def list_agents(self, owner: str, *, limit: int, after: str | None = None) -> list[AgentRecord]:
        query = sa.select(agents).where(agents.c.owner_hash == owner).order_by(agents.c.id).limit(limit)
        if after:
            query = query.where(agents.c.id > after)
        async with self.engine.connect() as conn:
            return [_agent(row._mapping) for row in await conn.execute(query)]

    async def update_agent(self, owner: str, agent_id: str, changes: Mapping[str, Any]) -> AgentRecord | None:
        unknown = set(changes) - _AGENT_FIELDS
        if unknown:
            raise ValueError(f"cannot update agent fields {sorted(unknown)}")
        async with self._write() as conn:
            result = await conn.execute(
                agents.update()
                .where(agents.c.id == agent_id, agents.c.owner_hash == owner)
                .values(**changes, updated_at=_now())
            )
            if result.rowcount == 0:
                return None
            row = (await conn.execute(sa.select(agents).where(agents.c.id == agent_id))).one()
        return _agent(row._mapping)

    async def delete_agent(self, owner: str, agent_id: str) -> bool:
        """Delete the agent with its sessions and their messages (explicitly: no reliance on FK cascades)."""
        async with self._write() as conn:
            found = await conn.scalar(
                sa.select(agents.c.id).where(agents.c.id == agent_id, agents.c.owner_hash == owner)
            )
            if found is None:
                return False
            owned = sa.select(sessions.c.id).where(sessions.c.agent_id == agent_id).scalar_subquery()
            await conn.execute(messages.delete().where(messages.c.session_id.in_(owned)))
            await conn.execute(sessions.delete().where(sessions.c.agent_id == agent_id))
            await conn.execute(agents.delete().where(agents.c.id == agent_id))
        return True

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, owner: str, agent_id: str, *, user_id: str | None, metadata: dict[str, Any]
    ) -> SessionRecord:
        now = _now()
        record = SessionRecord(new_id("sess"), agent_id, owner, user_id, metadata, "active", 0, None, now, now)
        async with self._write() as conn:
            await conn.execute(
                sessions.insert().values(
                    id=record.id,
                    agent_id=agent_id,
                    owner_hash=owner,
                    user_id=user_id,
                    meta=metadata,
                    state="active",
                    last_seq=0,
                    last_error=None,
                    created_at=now,
                    updated_at=now,
                )
            )
        return record

    async def get_session(self, owner: str, agent_id: str, session_id: str) -> SessionRecord | None:
        query = sa.select(sessions).where(
            sessions.c.id == session_id, sessions.c.agent_id == agent_id, sessions.c.owner_hash == owner
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _session(row._mapping) if row is not None else None

    async def list_sessions(
        self, owner: str, agent_id: str, *, user_id: str | None = None, limit: int, after: str | None = None
    ) -> list[SessionRecord]:
        query = (
            sa.select(sessions)
            .where(sessions.c.owner_hash == owner, sessions.c.agent_id == agent_id)
            .order_by(sessions.c.id)
            .limit(limit)
        )
        if user_id is not None:
            query = query.where(sessions.c.user_id == user_id)
        if after:
            query = query.where(sessions.c.id > after)
        async with self.engine.connect() as conn:
            return [_session(row._mapping) for row in await conn.execute(query)]

    async def delete_session(self, owner: str, agent_id: str, session_id: str) -> bool:
        async with self._write() as conn:
            found = await conn.scalar(
                sa.select(sessions.c.id).where(
                    sessions.c.id == session_id, sessions.c.agent_id == agent_id, sessions.c.owner_hash == owner
                )
            )
            if found is None:
                return False
            await conn.execute(messages.delete().where(messages.c.session_id == session_id))
            await conn.execute(sessions.delete().where(sessions.c.id == session_id))
        return True

    # ------------------------------------------------------------------ messages

    async def history(self, session_id: str, *, limit: int) -> list[MessageRecord]:
        """The newest ``limit`` messages usable as model context, oldest first.

        Messages with status ``error`` (a user message whose call failed) are left out: the
        model never answered them, and repeating them would confuse the next turn.
        """
        query = (
            sa.select(messages)
            .where(messages.c.session_id == session_id, messages.c.status != "error")
            .order_by(messages.c.seq.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = [_message(row._mapping) for row in await conn.execute(query)]
        rows.reverse()
        return rows

    async def list_messages(self, session_id: str, *, limit: int, after_seq: int = 0) -> list[MessageRecord]:
        query = (
            sa.select(messages)
            .where(messages.c.session_id == session_id, messages.c.seq > after_seq)
            .order_by(messages.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [_message(row._mapping) for row in await conn.execute(query)]

    async def record_turn(
        self,
        session_id: str,
        new: Sequence[NewMessage],
        *,
        state: SessionState,
        last_error: dict[str, Any] | None = None,
    ) -> Turn:
        """Append ``new`` (in order) and set the session's state, all in one transaction.

        Raises :class:`SessionGoneError` when the session no longer exists; nothing is written.
        """
        now = _now()
        async with self._write() as conn:
            last_seq = await self._lock_session(conn, session_id)
            rows = []
            for offset, msg in enumerate(new, start=1):
                rows.append(
                    {
                        "id": msg.id or new_id("msg"),
                        "session_id": session_id,
                        "seq": last_seq + offset,
                        "role": msg.role,
                        "content": msg.content,
                        "name": msg.name,
                        "tool_calls": msg.tool_calls,
                        "tool_call_id": msg.tool_call_id,
                        "finish_reason": msg.finish_reason,
                        "usage": msg.usage,
                        "provider": msg.provider,
                        "model": msg.model,
                        "attempts": msg.attempts,
                        "status": msg.status,
                        "error": msg.error,
                        "created_at": now,
                    }
                )
            if rows:
                await conn.execute(messages.insert(), rows)
            await conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id)
                .values(last_seq=last_seq + len(rows), state=state, last_error=last_error, updated_at=now)
            )
            row = (await conn.execute(sa.select(sessions).where(sessions.c.id == session_id))).one()
        stored = [_message(r) for r in rows]
        return Turn(messages=stored, session=_session(row._mapping))

    async def _lock_session(self, conn: AsyncConnection, session_id: str) -> int:
        query = sa.select(sessions.c.last_seq).where(sessions.c.id == session_id)
        if self._postgres:
            query = query.with_for_update()
        last_seq = await conn.scalar(query)
        if last_seq is None:
            raise SessionGoneError("the session was deleted while the message was being answered")
        return int(last_seq)
