"""Limits and timeouts observed from the other end of a real socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from fakes.openai_server import OpenAIFake
from fakes.upstream import FakeUpstream, Reply
from polyroute import ChatRequest, Message, Router, errors
from polyroute.providers.openai import OpenAIProvider


def request(**kw: object) -> ChatRequest:
    return ChatRequest(model="openai:gpt-4o-mini", messages=[Message.user("hi")], **kw)  # type: ignore[arg-type]


def slow_fake(delay: float) -> OpenAIFake:
    fake = OpenAIFake()

    async def answer(req: object) -> Reply:
        await asyncio.sleep(delay)
        return fake(req)  # type: ignore[arg-type]

    return answer  # type: ignore[return-value]


@pytest.mark.parametrize(("router_limit", "provider_limit", "expected"), [(3, None, 3), (64, 2, 2)])
async def test_the_server_never_sees_more_than_the_limit(
    upstream: FakeUpstream, router_limit: int, provider_limit: int | None, expected: int
) -> None:
    upstream.handler = slow_fake(0.1)
    async with Router(max_concurrency=router_limit, timeout=20) as router:
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"{upstream.url}/v1"), max_concurrency=provider_limit)
        results = await asyncio.gather(*(router.chat(request()) for _ in range(12)))
    assert all(r.text == "Hello from the fake." for r in results)
    assert upstream.peak_in_flight == expected
    assert len(upstream.requests) == 12


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A port whose accept queue is full, so new connections hang in SYN_SENT."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        fillers.append(client)
    try:
        yield port
    finally:
        for client in fillers:
            client.close()
        server.close()


async def test_connect_timeout_is_typed_and_falls_back(unresponsive_port: int, upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake()
    async with Router(connect_timeout=0.3, timeout=10) as router:
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"http://127.0.0.1:{unresponsive_port}/v1", name="stuck"))
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"{upstream.url}/v1"))
        loop = asyncio.get_running_loop()
        start = loop.time()
        response = await router.chat(request(fallbacks=["openai:gpt-4o-mini"]).model_copy(update={"model": "stuck:m"}))
        assert loop.time() - start < 3
    first = response.attempts[0]
    assert (first.provider, first.outcome, first.error) == ("stuck", "error", "TimeoutError")
    assert response.provider == "openai"


async def test_connect_timeout_kind(unresponsive_port: int) -> None:
    async with Router(connect_timeout=0.3, timeout=10) as router:
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"http://127.0.0.1:{unresponsive_port}/v1"))
        with pytest.raises(errors.AllCandidatesFailedError) as caught:
            await router.chat(request())
    last = caught.value.last_error
    assert isinstance(last, errors.TimeoutError) and last.kind == "connect"


async def test_refused_connection_is_unavailable_and_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Router(timeout=10) as router:
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1"))
        with pytest.raises(errors.AllCandidatesFailedError) as caught:
            await router.chat(request())
    assert isinstance(caught.value.last_error, errors.ProviderUnavailableError)


async def test_finished_streams_return_their_connection_to_the_pool(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake()
    async with Router(timeout=10) as router:
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"{upstream.url}/v1"))
        for _ in range(5):
            events = [e async for e in router.stream(request())]
            assert events[-1].type == "end"
    assert len(upstream.requests) == 5
    assert upstream.connections == 1


async def test_the_stream_idle_timeout_does_not_cut_a_slow_plain_call(upstream: FakeUpstream) -> None:
    """A plain call may take its whole deadline: the idle gap guards streams only."""
    upstream.handler = slow_fake(1.0)
    async with Router(timeout=10, idle_timeout=0.3) as router:
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"{upstream.url}/v1"))
        response = await router.chat(request())
    assert response.text == "Hello from the fake." and [a.outcome for a in response.attempts] == ["ok"]


async def test_a_slow_first_byte_is_judged_by_the_first_token_timeout_not_the_idle_one(upstream: FakeUpstream) -> None:
    upstream.handler = slow_fake(1.0)
    async with Router(timeout=10, first_token_timeout=5, idle_timeout=0.3) as router:
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"{upstream.url}/v1"))
        events = [e async for e in router.stream(request())]
    assert events[-1].type == "end" and "".join(e.delta for e in events) == "Hello from the fake."


async def test_a_renamed_registration_is_named_as_registered_everywhere(upstream: FakeUpstream) -> None:
    upstream.handler = OpenAIFake()
    async with Router(timeout=10) as router:
        router.register(OpenAIProvider(api_key="sk-test", base_url=f"{upstream.url}/v1"), name="up")
        ask = ChatRequest(model="up:gpt-4o-mini", messages=[Message.user("hi")])
        response = await router.chat(ask)
        events = [e async for e in router.stream(ask)]
    assert (response.provider, response.model) == ("up", "gpt-4o-mini")
    assert {(e.provider, e.model) for e in events} == {("up", "gpt-4o-mini")}
    assert events[-1].response is not None and events[-1].response.provider == "up"
