"""Time to first token over HTTP, and whether a server relays stream chunks as they come.

wrk measures a streamed response to its last byte; this client measures when the first
token's text arrives. It sends one request at a time, alternating between targets request by
request, so every target sees the same conditions; "added" time to first token is a
target's median minus the upstream's own.

The relay check asks for the slow answer shape (tokens spaced ``delay`` apart by the
upstream) and counts bursts: groups of body reads separated by more than half that delay.
A server that relays each chunk as it arrives produces one burst per token; one that
buffers produces fewer (one, if it holds the whole answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bench.stats import summary
from bench.targets import FAST_MODEL, SLOW_MODEL, Target
from bench.upstream import shape

__all__ = ["Probe", "StreamProbe", "measure"]

FIRST_TOKEN = b"Hello"


@dataclass
class StreamProbe:
    """One target endpoint's streaming request, ready to send."""

    target: str
    endpoint: str
    url: str
    body: bytes | str
    headers: dict[str, str]


@dataclass
class Probe:
    ttft_ns: list[int] = field(default_factory=list)
    total_ns: list[int] = field(default_factory=list)
    bursts: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _one(client: httpx2.AsyncClient, probe: StreamProbe, gap_ns: int) -> tuple[int, int, int]:
    """(ttft, total, bursts) of one streamed request, in ns."""
    t0 = time.perf_counter_ns()
    first = 0
    seen = b""
    last_read = 0
    bursts = 0
    async with client.stream("POST", probe.url, content=probe.body, headers=probe.headers) as response:
        if response.status_code >= 400:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        async for chunk in response.aiter_raw():
            now = time.perf_counter_ns()
            if not first:
                seen += chunk
                if FIRST_TOKEN in seen:
                    first = now
            if first and (not last_read or now - last_read > gap_ns):
                bursts += 1
            if first:
                last_read = now
    if not first:
        raise RuntimeError("the stream carried no token")
    return first - t0, time.perf_counter_ns() - t0, bursts


def probes(target: Target, model: str) -> list[StreamProbe]:
    """The streaming endpoints ``target`` offers, for the upstream answer shape ``model``."""
    out = []
    if target.has_chat:
        import orjson

        body = orjson.dumps(target.chat_body(model, stream=True))
        headers = {**target.headers, "content-type": "application/json"}
        out.append(StreamProbe(target.name, "chat-stream", target.base + "/v1/chat/completions", body, headers))
    if target.has_agents:
        session = target.new_sessions(model, 1)[0]
        path, text, headers = target.agent_call(model, session, stream=True)
        out.append(StreamProbe(target.name, "agent-stream", target.base + path, text, headers))
    return out


async def _measure(
    all_probes: list[StreamProbe], n: int, model: str, progress: Callable[[str], None]
) -> dict[str, Probe]:
    _, delay = shape(model)
    gap_ns = int(delay * 1e9 / 2) if delay else 10**18
    results = {f"{p.target}/{p.endpoint}": Probe() for p in all_probes}
    async with httpx2.AsyncClient(timeout=30) as client:
        for p in all_probes:  # warm up connections and server code paths
            for _ in range(3):
                try:
                    await _one(client, p, gap_ns)
                except Exception as exc:
                    results[f"{p.target}/{p.endpoint}"].errors.append(f"warmup: {type(exc).__name__}: {exc}"[:300])
        for i in range(n):
            k = i % len(all_probes)
            for p in (*all_probes[k:], *all_probes[:k]):
                r = results[f"{p.target}/{p.endpoint}"]
                try:
                    ttft, total, bursts = await _one(client, p, gap_ns)
                except Exception as exc:
                    r.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                r.ttft_ns.append(ttft)
                r.total_ns.append(total)
                r.bursts.append(bursts)
            if (i + 1) % max(1, n // 4) == 0:
                progress(f"{model}: {i + 1}/{n}")
    return results


def measure(
    targets: list[Target], *, n: int, relay_n: int, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """TTFT (fast answers) and relay bursts (slow answers) for every streaming endpoint of every target."""

    def run(model: str, count: int) -> dict[str, Probe]:
        everything = [p for t in targets for p in probes(t, model)]
        return asyncio.run(_measure(everything, count, model, progress))

    fast = run(FAST_MODEL, n)
    slow = run(SLOW_MODEL, relay_n)
    tokens, delay = shape(SLOW_MODEL)
    out: dict[str, Any] = {"relay_tokens": tokens, "relay_delay_ms": delay * 1000, "endpoints": {}}
    up = fast.get("upstream/chat-stream")
    up_ttft = summary(up.ttft_ns) if up and up.ttft_ns else None
    for key, probe in fast.items():
        entry: dict[str, Any] = {
            "ttft": summary(probe.ttft_ns, errors=len(probe.errors)),
            "total": summary(probe.total_ns),
            "errors": probe.errors[:5],
            "error_count": len(probe.errors),
        }
        if up_ttft is not None and probe.ttft_ns:
            entry["added_ttft_p50_us"] = (entry["ttft"]["p50_ms"] - up_ttft["p50_ms"]) * 1000
            entry["added_ttft_p99_us"] = (entry["ttft"]["p99_ms"] - up_ttft["p99_ms"]) * 1000
        relay = slow.get(key)
        if relay is not None:
            ordered = sorted(relay.bursts)
            entry["relay_bursts_median"] = ordered[len(ordered) // 2] if ordered else 0
            entry["relay_errors"] = len(relay.errors)
            entry["relay_unbuffered"] = bool(ordered) and ordered[len(ordered) // 2] >= tokens - 1
            entry["relay_total"] = summary(relay.total_ns)
        out["endpoints"][key] = entry
    return out
