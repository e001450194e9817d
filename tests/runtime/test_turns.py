"""A turn's final write survives the request being cancelled while it is in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from polyroute.runtime import create_app
from polyroute.runtime.turns import run_turn
from polyroute.types import Message
from runtime.support import EchoProvider, make_router, running, settings_for


async def test_cancelling_the_request_during_the_write_still_stores_the_turn(tmp_path: Path) -> None:
    app = create_app(make_router(EchoProvider("fake")), settings_for(tmp_path))
    async with running(app) as client:
        runtime = app.state.runtime
        aid = (await client.post("/agents", json={"name": "a", "model": "fake:small"})).json()["agentId"]
        sid = (await client.post(f"/agents/{aid}/sessions", json={})).json()["sessionId"]
        agent = await runtime.store.get_agent("", aid)
        writing = asyncio.Event()
        real = runtime.store.record_turn

        async def slow_write(*args: Any, **kw: Any) -> Any:
            writing.set()
            await asyncio.sleep(0.2)
            return await real(*args, **kw)

        runtime.store.record_turn = slow_write
        task = asyncio.create_task(run_turn(runtime, agent, sid, [Message.user("hi")]))
        await writing.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not runtime.locks.busy(sid)  # released only after the write finished
        stored = (await client.get(f"/agents/{aid}/sessions/{sid}/messages")).json()["data"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", "hi"), ("assistant", "echo: hi")]
