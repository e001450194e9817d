"""The guide's sustained scenario: 100 concurrent streaming sessions with 128-token inputs.

A fresh server (so its memory history starts at boot) takes 100 connections that each stream
``/v1/chat/completions`` back to back for the whole period; the upstream streams 64 tokens
5 ms apart, so each session holds its stream open about a third of a second, as a real model
would. Reported: completed streams, error rate, latency percentiles (to the last token), RSS
idle before the load, sampled every second during it, peak, and its growth from the end of
the first tenth of the run (after warm-up allocations) to the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, procs
from bench.targets import SCENARIO_MODEL, running

__all__ = ["ScenarioConfig", "prompt_128_tokens", "run_scenario"]

_WORDS = [
    "please",
    "summarise",
    "the",
    "following",
    "internal",
    "note",
    "about",
    "our",
    "quarterly",
    "planning",
    "and",
    "list",
    "the",
    "three",
    "most",
    "important",
    "risks",
    "with",
    "one",
    "sentence",
    "each",
    "while",
    "keeping",
    "the",
    "tone",
    "neutral",
    "and",
    "the",
    "answer",
    "short",
]


def prompt_128_tokens() -> str:
    """A 128-word prompt; about 128 tokens by any common tokenizer for plain English of short words."""
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(128))


@dataclass
class ScenarioConfig:
    systems: tuple[str, ...] = ("polyroute",)
    duration: float = 600.0
    #: other systems may get a shorter run (the target is about polyroute's behaviour)
    other_duration: float = 120.0
    connections: int = 100
    wrk_cpus: set[int] | None = None
    server_cpus: set[int] | None = None


def _growth(samples: list[tuple[float, float]], duration: float) -> dict[str, float]:
    if not samples:
        return {}
    after_warmup = [mb for t, mb in samples if t >= duration * 0.1] or [samples[-1][1]]
    start, end = after_warmup[0], samples[-1][1]
    return {
        "rss_after_warmup_mb": start,
        "rss_end_mb": end,
        "rss_growth_pct": (end - start) / start * 100 if start else float("nan"),
    }


def run_scenario(
    upstream: procs.Child, work: Path, cfg: ScenarioConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    if loadgen.available() is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    upstream_url = f"http://127.0.0.1:{upstream.port}/v1"
    out: dict[str, Any] = {
        "connections": cfg.connections,
        "input_words": 128,
        "upstream_answer": SCENARIO_MODEL,
        "systems": {},
    }
    prompt = prompt_128_tokens()
    for name in cfg.systems:
        duration = cfg.duration if name == "polyroute" else cfg.other_duration
        progress(f"{name}: {cfg.connections} streaming sessions for {duration:.0f} s")
        try:
            with running(name, work / "scenario", upstream_url, cfg.server_cpus) as target:
                time.sleep(1.0)
                idle = target.rss_mb()
                if target.has_chat:
                    req = target.chat_request(SCENARIO_MODEL, stream=True, prompt=prompt)
                    endpoint = "chat-stream"
                else:  # AgentOS has no /v1: its streaming agent run, one session per connection
                    sessions = target.new_sessions(SCENARIO_MODEL, cfg.connections)
                    req = target.agent_request(SCENARIO_MODEL, sessions, stream=True, prompt=prompt)
                    endpoint = "agent-stream"
                assert target.child is not None
                with procs.RSSSampler(target.child.pid, interval=1.0) as sampler:
                    res = loadgen.run_wrk(
                        target.base, req, connections=cfg.connections, duration=duration, timeout=10, cpus=cfg.wrk_cpus
                    )
                info: dict[str, Any] = {
                    "status": "ok",
                    "endpoint": endpoint,
                    "duration_s": res.duration_s,
                    "streams": res.requests,
                    "streams_per_s": res.rps,
                    "errors": res.errors,
                    "error_detail": res.error_detail,
                    "error_rate": res.errors / max(1, res.requests + res.error_detail["connect"]),
                    "p50_ms": res.pct(50),
                    "p95_ms": res.pct(95),
                    "p99_ms": res.pct(99),
                    "rss_idle_mb": idle,
                    "rss_peak_mb": max(sampler.peak, idle),
                    "rss_hwm_mb": target.child.hwm_mb(),
                    "rss_samples": [(round(t, 1), round(mb, 2)) for t, mb in sampler.samples],
                    **_growth(sampler.samples, duration),
                }
                if not target.child.alive():
                    info["status"] = "crashed"
        except Exception as exc:
            info = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
        progress(
            f"{name}: {info.get('streams', 0)} streams, p95 {info.get('p95_ms', float('nan')):.1f} ms, "
            f"errors {info.get('errors', '-')}, peak RSS {info.get('rss_peak_mb', float('nan')):.1f} MB"
        )
        out["systems"][name] = info
    return out
