"""Session turn locks: serialized in one process, and across processes on PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from polyroute.storage import Database, SessionBusyError, StorageBusyError
from polyroute.storage.locks import advisory_key


async def test_holders_of_one_session_take_turns_and_other_sessions_do_not_wait(db: Database) -> None:
    log: list[str] = []

    async def turn(session: str, name: str) -> None:
        async with db.locks.hold(session):
            log.append(f"{name} in")
            await asyncio.sleep(0.05)
            log.append(f"{name} out")

    await asyncio.gather(turn("s1", "a"), turn("s1", "b"), turn("s2", "c"))
    assert log.index("a out") < log.index("b in")  # a and b never overlap
    assert log.index("c in") < log.index("a out")  # c (another session) ran alongside
    assert not db.locks.busy("s1") and not db.locks._entries


async def test_waiting_too_long_is_session_busy(db: Database) -> None:
    db.locks.timeout = 0.05
    async with db.locks.hold("s"):
        with pytest.raises(SessionBusyError) as info:
            async with db.locks.hold("s"):
                pass
    assert info.value.retry_after is not None


async def test_the_lock_is_released_when_the_turn_fails(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.locks.hold("s"):
            raise RuntimeError("boom")
    async with asyncio.timeout(1):
        async with db.locks.hold("s"):
            pass


def test_advisory_keys_are_stable_signed_64_bit() -> None:
    key = advisory_key("sess_0123")
    assert key == advisory_key("sess_0123") != advisory_key("sess_0124")
    assert -(2**63) <= key < 2**63


@pytest.mark.postgres
async def test_two_databases_exclude_each_other_through_postgres(pg_url: str) -> None:
    first, second = Database(pg_url, lock_timeout=5.0), Database(pg_url, lock_timeout=0.2)
    await first.open()
    await second.open()
    try:
        assert first.locks.cross_process
        log: list[str] = []
        entered = asyncio.Event()

        async def holder() -> None:
            async with first.locks.hold("shared"):
                log.append("first in")
                entered.set()
                await asyncio.sleep(0.4)
                log.append("first out")

        task = asyncio.create_task(holder())
        await entered.wait()
        with pytest.raises(SessionBusyError):  # held by the other "process"
            async with second.locks.hold("shared"):
                pass
        second.locks.timeout = 5.0  # the lock engine's lock_timeout stays 0.2s; rebuild to wait longer
        await second.close()
        second = Database(pg_url, lock_timeout=5.0)
        await second.open()
        async with second.locks.hold("shared"):
            log.append("second in")
        await task
        assert log == ["first in", "first out", "second in"]
        async with second.locks.hold("other"):  # unrelated sessions are free
            pass
    finally:
        await first.close()
        await second.close()


@pytest.mark.postgres
async def test_a_full_lock_pool_is_storage_busy_not_a_hang(pg_url: str) -> None:
    from polyroute.runtime.errors import storage_api_error

    database = Database(pg_url, lock_pool_size=1, lock_timeout=0.2)
    await database.open()
    try:
        async with database.locks.hold("a"):
            with pytest.raises(StorageBusyError) as info:
                async with database.locks.hold("b"):  # another session, but no lock connection is free
                    pass
        async with database.locks.hold("b"):  # free again once "a" is done
            pass
    finally:
        await database.close()
    error = storage_api_error(info.value)
    assert (error.status, error.code, error.headers) == (429, "too_many_active_sessions", {"Retry-After": "1"})
