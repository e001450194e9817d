"""Fixtures for the shared-state tests: a Redis key prefix of each test's own, and two replicas' state."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from fakes.replicas import REDIS_URL, Frozen, redis_reason
from polyroute.router.shared import SharedState


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own, and every key under it deleted afterwards."""
    reason = redis_reason()
    if reason is not None:
        pytest.skip(reason)
    import redis

    name = f"polyroute-test-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def pair(prefix: str) -> AsyncIterator[tuple[SharedState, SharedState]]:
    """Two replicas' shared state on one Redis, with a frozen limit clock."""
    clock = Frozen()
    one, two = SharedState(REDIS_URL, prefix=prefix, clock=clock), SharedState(REDIS_URL, prefix=prefix, clock=clock)
    yield one, two
    await one.aclose()
    await two.aclose()
