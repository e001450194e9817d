"""The calls an in-process benchmark times: bare httpx2, polyroute's Router, litellm's Router.

Every call sends the same request (one user message, same model name) to the same fake
upstream and does the minimum a caller needs: a non-streaming call ends with the reply's text
in hand, a streaming call ends after ``[DONE]`` with every token seen. A call returns the
``perf_counter_ns`` instant its first token arrived (streaming) or None; the runner does the
timing, so every system is timed by the same code.

A system's module is imported only by the worker that measures it, so a polyroute worker
never carries litellm's import weight (or its background tasks) and vice versa.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import orjson

__all__ = ["Call", "build_calls", "model_name"]

Call = Callable[[], Awaitable[int | None]]

PROMPT = "Recommend a cheap, fast model for a small internal tool."
API_KEY = "sk-bench-not-a-real-key"


def model_name(tokens: int = 16, delay_ms: float = 0) -> str:
    """The upstream model name that selects an answer shape (see :mod:`bench.upstream`)."""
    return f"bench-t{tokens}-d{delay_ms:g}"


def _body(model: str, prompt: str, *, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def _check_reply(raw: bytes) -> None:
    if not orjson.loads(raw)["choices"][0]["message"]["content"]:
        raise RuntimeError("empty reply")


def _on_data(data: bytes, first: int | None) -> tuple[bool, int | None]:
    """One SSE ``data:`` payload: (was it ``[DONE]``, the first token's instant so far)."""
    if data == b"[DONE]":
        return True, first
    choices = orjson.loads(data)["choices"]
    if first is None and choices and choices[0]["delta"].get("content"):
        first = time.perf_counter_ns()
    return False, first


def _first_token(done: bool, first: int | None) -> int:
    if not done or first is None:
        raise RuntimeError("stream ended before [DONE] or with no token")
    return first


def _httpx_calls(base_url: str, model: str, prompt: str) -> dict[str, Call]:
    """The baseline: what a caller hand-writing an httpx2 call would do, nothing more."""
    client = httpx2.AsyncClient(
        base_url=base_url,
        headers={"authorization": f"Bearer {API_KEY}"},
        limits=httpx2.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=30.0),
        timeout=httpx2.Timeout(60.0, connect=10.0),
    )
    headers = {"content-type": "application/json"}
    stream_headers = {"content-type": "application/json", "accept": "text/event-stream"}

    async def chat() -> int | None:
        response = await client.post("/chat/completions", content=_body(model, prompt, stream=False), headers=headers)
        response.raise_for_status()
        _check_reply(response.content)
        return None

    async def stream() -> int | None:
        first: int | None = None
        done = False
        buf = b""
        content = _body(model, prompt, stream=True)
        async with client.stream("POST", "/chat/completions", content=content, headers=stream_headers) as r:
            r.raise_for_status()
            # Read to the end of the body, past [DONE]: leaving early makes httpx2 close the
            # connection instead of returning it to the pool.
            async for piece in r.aiter_bytes():
                if done:
                    continue
                buf += piece
                *events, buf = buf.split(b"\n\n")
                for event in events:
                    if event.startswith(b"data: "):
                        done, first = _on_data(event[6:], first)
                        if done:
                            break
        return _first_token(done, first)

    return {"chat": chat, "stream": stream}


def _polyroute_calls(base_url: str, model: str, prompt: str) -> dict[str, Call]:
    from polyroute import ChatRequest, Message, Router
    from polyroute.providers.openai import OpenAIProvider

    router = Router(max_concurrency=1024, timeout=60.0)
    router.register(OpenAIProvider(api_key=API_KEY, base_url=base_url, name="openai"))
    ref = f"openai:{model}"

    async def chat() -> int | None:
        response = await router.chat(ChatRequest(model=ref, messages=[Message.user(prompt)]))
        if not response.message.content:
            raise RuntimeError("empty reply")
        return None

    async def stream() -> int | None:
        first: int | None = None
        async for event in router.stream(ChatRequest(model=ref, messages=[Message.user(prompt)])):
            if first is None and event.type == "token":
                first = time.perf_counter_ns()
        return _first_token(True, first)

    return {"chat": chat, "stream": stream}


def _litellm_calls(base_url: str, model: str, prompt: str) -> dict[str, Call]:
    # Never fetch the model cost map over the network; send no telemetry.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm as _litellm

    litellm: Any = _litellm  # untyped at its top level

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    router: Any = litellm.Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {"model": f"openai/{model}", "api_base": base_url, "api_key": API_KEY},
            }
        ],
        num_retries=0,
    )

    async def chat() -> int | None:
        response = await router.acompletion(model="bench", messages=[{"role": "user", "content": prompt}])
        if not response.choices[0].message.content:
            raise RuntimeError("empty reply")
        return None

    async def stream() -> int | None:
        first: int | None = None
        response = await router.acompletion(model="bench", messages=[{"role": "user", "content": prompt}], stream=True)
        async for chunk in response:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter_ns()
        return _first_token(True, first)

    return {"chat": chat, "stream": stream}


def _aiohttp_calls(base_url: str, model: str, prompt: str) -> dict[str, Call]:
    """Bare aiohttp: not a system under test, a second baseline showing the transport's share."""
    import aiohttp

    session: aiohttp.ClientSession | None = None
    url = base_url + "/chat/completions"
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}

    def client() -> aiohttp.ClientSession:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        return session

    async def chat() -> int | None:
        async with client().post(url, data=_body(model, prompt, stream=False), headers=headers) as response:
            response.raise_for_status()
            _check_reply(await response.read())
        return None

    async def stream() -> int | None:
        first: int | None = None
        done = False
        async with client().post(url, data=_body(model, prompt, stream=True), headers=headers) as response:
            response.raise_for_status()
            async for line in response.content:  # read to the end, as the httpx2 baseline does
                if not done and line.startswith(b"data: "):
                    done, first = _on_data(line[6:].rstrip(), first)
        return _first_token(done, first)

    async def close() -> int | None:
        if session is not None:
            await session.close()
        return None

    return {"chat": chat, "stream": stream, "close": close}


_SYSTEMS: dict[str, Callable[[str, str, str], dict[str, Call]]] = {
    "httpx2": _httpx_calls,
    "aiohttp": _aiohttp_calls,
    "polyroute": _polyroute_calls,
    "litellm": _litellm_calls,
}

SYSTEMS = tuple(_SYSTEMS)


def build_calls(system: str, base_url: str, model: str, prompt: str = PROMPT) -> dict[str, Call]:
    """``{"chat": call, "stream": call}`` for one system against ``base_url`` (ends in ``/v1``).

    A system holding resources that need an orderly close adds a ``"close"`` entry.
    """
    return _SYSTEMS[system](base_url, model, prompt)
