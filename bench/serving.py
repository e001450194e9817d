"""HTTP overhead (point 3): each server under wrk at several concurrencies, against the upstream directly.

For every system (the upstream itself first, then polyroute, the LiteLLM proxy, AgentOS)
this starts the server alone (so an idle competitor never shares the machine with the one
being measured), reads its idle RSS, warms it up, then runs wrk for each endpoint it offers
and each concurrency, sampling its RSS throughout. Then it measures time to first token and
chunk relay against the upstream, interleaved request by request. A system that cannot be
installed or started is reported with the reason, never with numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, procs, profiling, ttft
from bench.targets import FAST_MODEL, Target, WrkRequest, running, upstream_target

__all__ = ["HttpConfig", "run_http", "system_available"]

ENDPOINTS = ("chat", "chat-stream", "agent", "agent-stream")


@dataclass
class HttpConfig:
    systems: tuple[str, ...] = ("polyroute", "litellm", "agentos")
    concurrencies: tuple[int, ...] = (1, 16, 64)
    endpoints: tuple[str, ...] = ENDPOINTS
    duration: float = 10.0
    warmup: float = 2.0
    ttft_n: int = 200
    relay_n: int = 10
    wrk_cpus: set[int] | None = None
    server_cpus: set[int] | None = None
    #: where to write py-spy summaries of polyroute serve under load (None: no profiling)
    profile_dir: Path | None = None
    profile_seconds: float = 8.0


def system_available(name: str) -> str | None:
    """Why ``name`` cannot be benchmarked here (a missing package), or None.

    Only top-level packages are looked up: finding a submodule would import its parent,
    and importing litellm here would cost this process seconds and hundreds of MB.
    """
    from importlib.util import find_spec

    needs = {
        "polyroute": ("polyroute", "uvicorn", "starlette", "aiosqlite"),
        "litellm": ("litellm", "fastapi", "backoff", "apscheduler"),
        "agentos": ("agno", "fastapi", "openai", "sqlalchemy", "aiosqlite"),
    }
    for module in needs.get(name, ()):
        if find_spec(module) is None:
            extra = "'.[bench]'" if name != "polyroute" else "'.[server]'"
            return f"Python package {module!r} is not installed (pip install -e {extra})"
    return None


def _requests(target: Target, endpoint: str, concurrency: int) -> WrkRequest | None:
    if endpoint.startswith("chat"):
        if not target.has_chat:
            return None
        return target.chat_request(FAST_MODEL, stream=endpoint == "chat-stream")
    if not target.has_agents:
        return None
    # Fresh sessions per run, twice as many as connections: turns to one session are serialised
    # by design, and a short history keeps payloads the same size from run to run.
    sessions = target.new_sessions(FAST_MODEL, max(8, 2 * concurrency))
    return target.agent_request(FAST_MODEL, sessions, stream=endpoint == "agent-stream")


def _cells(
    target: Target, cfg: HttpConfig, progress: Callable[[str], None]
) -> tuple[list[dict[str, Any]], procs.RSSSampler | None]:
    rows: list[dict[str, Any]] = []
    sampler = procs.RSSSampler(target.child.pid, interval=0.25) if target.child else None
    if sampler is not None:
        sampler.__enter__()
    try:
        for endpoint in cfg.endpoints:
            warm = _requests(target, endpoint, 16)
            if warm is None:
                continue
            loadgen.run_wrk(target.base, warm, connections=16, duration=cfg.warmup, cpus=cfg.wrk_cpus)
            for c in cfg.concurrencies:
                req = _requests(target, endpoint, c)
                assert req is not None
                res = loadgen.run_wrk(target.base, req, connections=c, duration=cfg.duration, cpus=cfg.wrk_cpus)
                row = {"system": target.name, "endpoint": endpoint, "concurrency": c, **res.as_dict()}
                rows.append(row)
                progress(
                    f"{target.name} {endpoint} c{c}: {res.rps:.0f} req/s p50 {res.pct(50):.2f} ms "
                    f"p99 {res.pct(99):.2f} ms errors {res.errors}"
                )
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
    return rows, sampler


def _measure_system(
    target: Target, upstream: Target, cfg: HttpConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    time.sleep(1.0)
    info: dict[str, Any] = {"status": "ok", "idle_rss_mb": target.rss_mb()}
    rows, sampler = _cells(target, cfg, progress)
    info["rows"] = rows
    if sampler is not None:
        info["load_rss_peak_mb"] = sampler.peak
        info["rss_after_load_mb"] = target.rss_mb()
    if target.name == "polyroute" and cfg.profile_dir is not None and target.child is not None:
        info["profiles"] = _profile(target, cfg, progress)
    if target.name != "upstream":
        progress(f"{target.name}: time to first token and relay")
        info["ttft"] = ttft.measure([upstream, target], n=cfg.ttft_n, relay_n=cfg.relay_n, progress=progress)
    return info


def _profile(target: Target, cfg: HttpConfig, progress: Callable[[str], None]) -> dict[str, str]:
    """py-spy summaries of the server at 16 connections, one per endpoint, written to profile_dir."""
    assert cfg.profile_dir is not None and target.child is not None
    if profiling.available() is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    cfg.profile_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for endpoint in cfg.endpoints:
        req = _requests(target, endpoint, 16)
        if req is None:
            continue
        loadgen.run_wrk(target.base, req, connections=16, duration=1, cpus=cfg.wrk_cpus)  # warm
        raw = cfg.profile_dir / f".profile-server-{endpoint}.collapsed"
        thread = profiling.record_during(target.child.pid, cfg.profile_seconds, raw)
        loadgen.run_wrk(target.base, req, connections=16, duration=cfg.profile_seconds + 1, cpus=cfg.wrk_cpus)
        thread.join()
        if not raw.exists():
            written[endpoint] = "py-spy could not attach (needs ptrace permission)"
            continue
        out = cfg.profile_dir / f"profile-server-{endpoint}.txt"
        out.write_text(f"polyroute serve, {endpoint}, wrk 16 connections, py-spy\n\n" + profiling.summarise(raw))
        raw.unlink()
        written[endpoint] = str(out)
        progress(f"profile of {endpoint} written to {out}")
    return written


def run_http(upstream: procs.Child, work: Path, cfg: HttpConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    """Results per system: idle/peak RSS, wrk rows, TTFT; or the reason a system was skipped."""
    if loadgen.available() is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    upstream_url = f"http://127.0.0.1:{upstream.port}/v1"
    base = upstream_target(upstream)
    out: dict[str, Any] = {"systems": {}}
    progress("upstream (direct)")
    out["systems"]["upstream"] = _measure_system(base, base, cfg, progress)
    for name in cfg.systems:
        reason = system_available(name)
        if reason is not None:
            out["systems"][name] = {"status": "skipped", "reason": reason}
            progress(f"{name}: skipped: {reason}")
            continue
        progress(f"{name}: starting")
        try:
            t0 = time.monotonic()
            with running(name, work, upstream_url, cfg.server_cpus) as target:
                startup = time.monotonic() - t0
                info = _measure_system(target, base, cfg, progress)
                info["startup_s"] = startup
                if target.child is not None and not target.child.alive():
                    info["status"] = "crashed"
                    info["log_tail"] = target.child.log_tail()
        except Exception as exc:
            info = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
            progress(f"{name}: FAILED: {info['reason'][:300]}")
        out["systems"][name] = info
    out["added"] = _added(out["systems"])
    return out


def _added(systems: dict[str, Any]) -> list[dict[str, Any]]:
    """Each system's p50/p99 over the upstream's, per endpoint kind and concurrency."""
    up = {(r["endpoint"], r["concurrency"]): r for r in systems.get("upstream", {}).get("rows", [])}
    rows = []
    for name, info in systems.items():
        if name == "upstream":
            continue
        for r in info.get("rows", []):
            ref = up.get(("chat-stream" if r["endpoint"].endswith("stream") else "chat", r["concurrency"]))
            if ref is None:
                continue
            rows.append(
                {
                    "system": name,
                    "endpoint": r["endpoint"],
                    "concurrency": r["concurrency"],
                    "added_p50_ms": r["p50_ms"] - ref["p50_ms"],
                    "added_p99_ms": r["p99_ms"] - ref["p99_ms"],
                    "rps_vs_upstream": r["rps"] / ref["rps"] if ref["rps"] else float("nan"),
                }
            )
    return rows
