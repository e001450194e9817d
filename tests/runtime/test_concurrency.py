"""Concurrent posts to one session are serialized: nothing lost, nothing interleaved.

On PostgreSQL the posts go through two app instances sharing the database: each has its own
in-process locks, so only the database lock can keep them apart (as for two server processes).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import httpx2

from polyroute.runtime import create_app
from polyroute.types import ChatRequest
from runtime.support import EchoProvider, make_router, running, settings_for

POSTS = 50


async def test_concurrent_posts_to_one_session_leave_every_message_in_order(database_url: str, tmp_path: Path) -> None:
    fake = EchoProvider("fake", delay=0.002)  # shared by both apps: its peak concurrency is global
    instances = 2 if database_url.startswith("postgresql") else 1
    settings = settings_for(tmp_path, databaseUrl=database_url)
    async with AsyncExitStack() as stack:
        clients: list[httpx2.AsyncClient] = [
            await stack.enter_async_context(running(create_app(make_router(fake), settings))) for _ in range(instances)
        ]
        aid = (await clients[0].post("/agents", json={"name": "a", "model": "fake:small"})).json()["agentId"]
        url = (
            f"/agents/{aid}/sessions/" + (await clients[0].post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]
        )

        async def post(i: int) -> httpx2.Response:
            return await clients[i % instances].post(f"{url}/messages", json={"content": f"message {i}"})

        replies = await asyncio.gather(*(post(i) for i in range(POSTS)))
        assert [r.status_code for r in replies] == [200] * POSTS
        stored: list[dict[str, object]] = []
        cursor = None
        while True:
            page = (
                await clients[-1].get(
                    f"{url}/messages", params={"limit": "100", **({"cursor": cursor} if cursor else {})}
                )
            ).json()
            stored += page["data"]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        session = (await clients[-1].get(url)).json()

    assert len(stored) == 2 * POSTS
    assert [m["seq"] for m in stored] == list(range(1, 2 * POSTS + 1))
    users, replies_stored = stored[0::2], stored[1::2]
    assert all(m["role"] == "user" for m in users)
    assert all(m["role"] == "assistant" for m in replies_stored)
    for question, answer in zip(users, replies_stored, strict=True):
        assert answer["content"] == f"echo: {question['content']}"  # each reply follows its own question
    assert sorted(str(m["content"]) for m in users) == sorted(f"message {i}" for i in range(POSTS))
    assert session["messageCount"] == 2 * POSTS
    # every call saw all the turns before it: the histories are 1, 3, 5, ... messages long
    sizes = sorted(len(req.messages) for _, req in fake.calls if isinstance(req, ChatRequest))
    assert sizes == list(range(1, 2 * POSTS, 2))
    assert fake.peak == 1


async def test_a_post_that_waits_too_long_for_the_session_is_409(tmp_path: Path) -> None:
    fake = EchoProvider("fake", delay=1.0)
    settings = settings_for(tmp_path, sessionLockTimeout=0.1)
    async with running(create_app(make_router(fake), settings)) as client:
        aid = (await client.post("/agents", json={"name": "a", "model": "fake:small"})).json()["agentId"]
        url = f"/agents/{aid}/sessions/" + (await client.post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]
        first = asyncio.create_task(client.post(f"{url}/messages", json={"content": "slow"}))
        while not fake.calls:
            await asyncio.sleep(0.01)
        second = await client.post(f"{url}/messages", json={"content": "impatient"})
        assert (await first).status_code == 200
        stored = (await client.get(f"{url}/messages")).json()["data"]
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "session_busy"
    assert int(second.headers["retry-after"]) >= 1
    assert [m["content"] for m in stored] == ["slow", "echo: slow"]  # the refused post left nothing behind
