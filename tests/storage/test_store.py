"""The Store on SQLite and PostgreSQL: CRUD with ownership, turns written atomically, history."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from polyroute.storage import Database, NewMessage, SessionGoneError
from polyroute.storage.schema import messages, sessions


async def _session(db: Database, owner: str, user: str | None = "u") -> tuple[str, str]:
    agent = await db.store.create_agent(owner, name="a", description=None, model="fake:m", tools=[], config={})
    session = await db.store.create_session(owner, agent.id, user_id=user, metadata={"k": "v"})
    return agent.id, session.id


async def test_agents_round_trip_and_are_scoped_to_their_owner(db: Database, owner: str) -> None:
    store = db.store
    model = {"provider": "fake", "modelId": "m", "maxTokens": 5}
    agent = await store.create_agent(
        owner,
        name="ünï",
        description="d",
        model=model,
        tools=[{"name": "t"}],
        config={"fallbackModels": ["a:b"], "nested": {"x": [1, 2.5, None]}},
    )
    got = await store.get_agent(owner, agent.id)
    assert got == agent
    assert got is not None and got.created_at.tzinfo is not None
    assert await store.get_agent("someone-else", agent.id) is None
    assert await store.list_agents("someone-else", limit=10) == []
    assert await store.update_agent("someone-else", agent.id, {"name": "x"}) is None
    assert await store.delete_agent("someone-else", agent.id) is False
    updated = await store.update_agent(owner, agent.id, {"name": "b", "config": {}})
    assert updated is not None and (updated.name, updated.config, updated.model) == ("b", {}, model)
    assert updated.updated_at >= agent.updated_at
    with pytest.raises(ValueError, match="owner_hash"):
        await store.update_agent(owner, agent.id, {"owner_hash": "mine"})


async def test_list_agents_pages_by_id(db: Database, owner: str) -> None:
    ids = [
        (await db.store.create_agent(owner, name=str(i), description=None, model="a:b", tools=[], config={})).id
        for i in range(5)
    ]
    first = await db.store.list_agents(owner, limit=3)
    rest = await db.store.list_agents(owner, limit=3, after=first[-1].id)
    assert [a.id for a in first + rest] == sorted(ids)


async def test_sessions_filter_by_user_and_agent(db: Database, owner: str) -> None:
    aid, sid = await _session(db, owner, "alice")
    other = await db.store.create_session(owner, aid, user_id="bob", metadata={})
    assert [s.id for s in await db.store.list_sessions(owner, aid, user_id="alice", limit=10)] == [sid]
    assert len(await db.store.list_sessions(owner, aid, limit=10)) == 2
    assert await db.store.get_session(owner, "agent_other", sid) is None
    assert await db.store.get_session("not-owner", aid, sid) is None
    assert await db.store.delete_session(owner, aid, other.id) is True
    assert await db.store.delete_session(owner, aid, other.id) is False


async def test_record_turn_numbers_messages_and_sets_the_state(db: Database, owner: str) -> None:
    _, sid = await _session(db, owner)
    turn = await db.store.record_turn(sid, [NewMessage("user", "q1"), NewMessage("assistant", "a1")], state="active")
    assert [m.seq for m in turn.messages] == [1, 2]
    assert turn.session is not None and turn.session.last_seq == 2
    error = {"code": "x", "message": "failed"}
    turn = await db.store.record_turn(
        sid, [NewMessage("user", "q2", status="error", error=error)], state="error", last_error=error
    )
    assert turn.session is not None and (turn.session.state, turn.session.last_error) == ("error", error)
    listed = await db.store.list_messages(sid, limit=10)
    assert [(m.seq, m.content, m.status) for m in listed] == [
        (1, "q1", "complete"),
        (2, "a1", "complete"),
        (3, "q2", "error"),
    ]
    assert [m.seq for m in await db.store.list_messages(sid, limit=10, after_seq=1)] == [2, 3]
    assert [m.content for m in await db.store.history(sid, limit=10)] == ["q1", "a1"]  # failed messages left out
    assert [m.content for m in await db.store.history(sid, limit=1)] == ["a1"]  # the newest, in order


async def test_a_failing_turn_writes_nothing(db: Database, owner: str) -> None:
    _, sid = await _session(db, owner)
    await db.store.record_turn(sid, [NewMessage("user", "first", id="msg_fixed")], state="active")
    with pytest.raises(sa.exc.IntegrityError):
        # the second row reuses an id: the whole transaction, including the first row, is rolled back
        await db.store.record_turn(
            sid, [NewMessage("user", "q"), NewMessage("assistant", "a", id="msg_fixed")], state="active"
        )
    assert [m.content for m in await db.store.list_messages(sid, limit=10)] == ["first"]
    session = await db.store.get_session(owner, (await db.store.list_agents(owner, limit=1))[0].id, sid)
    assert session is not None and session.last_seq == 1


async def test_a_turn_for_a_deleted_session_raises_and_writes_nothing(db: Database, owner: str) -> None:
    aid, sid = await _session(db, owner)
    await db.store.delete_session(owner, aid, sid)
    with pytest.raises(SessionGoneError):
        await db.store.record_turn(sid, [NewMessage("user", "late")], state="active")
    async with db.store.engine.connect() as conn:
        assert (
            await conn.scalar(sa.select(sa.func.count()).select_from(messages).where(messages.c.session_id == sid)) == 0
        )


async def test_deleting_an_agent_deletes_its_sessions_and_messages(db: Database, owner: str) -> None:
    aid, sid = await _session(db, owner)
    await db.store.record_turn(sid, [NewMessage("user", "x")], state="active")
    assert await db.store.delete_agent(owner, aid) is True
    async with db.store.engine.connect() as conn:
        assert (
            await conn.scalar(sa.select(sa.func.count()).select_from(sessions).where(sessions.c.agent_id == aid)) == 0
        )
        assert (
            await conn.scalar(sa.select(sa.func.count()).select_from(messages).where(messages.c.session_id == sid)) == 0
        )


async def test_structured_content_round_trips(db: Database, owner: str) -> None:
    _, sid = await _session(db, owner)
    parts = [{"type": "text", "text": "look"}, {"type": "image", "url": "https://x/y.png"}]
    calls = [{"id": "c", "name": "f", "arguments": {"a": [1, {"b": None}]}, "rawArguments": "{}"}]
    await db.store.record_turn(
        sid,
        [NewMessage("user", parts), NewMessage("assistant", None, tool_calls=calls, usage={"totalTokens": 3})],
        state="active",
    )
    stored = await db.store.list_messages(sid, limit=10)
    assert stored[0].content == parts
    assert (stored[1].content, stored[1].tool_calls, stored[1].usage) == (None, calls, {"totalTokens": 3})
