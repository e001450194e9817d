"""In-process overhead: ``Router.chat`` / ``Router.stream`` and ``litellm.Router`` over bare httpx2.

``python -m bench.inprocess [--quick] [--systems polyroute,litellm]`` starts the fake upstream,
then one worker process per system. Each worker times its system's calls *and* bare httpx2
calls to the same upstream with the same payload, so "added latency" is always measured
against a baseline taken in the same process, the same minute, on the same CPU. At
concurrency 1 the worker alternates system and baseline call by call (rotating which goes
first); at concurrency 64 it runs each variant in turn, and the parent rotates the order
and the workers round by round, so slow drift (thermal, other tenants) hits all alike. All
concurrency-1 rounds run before the first burst (see the comment in :func:`run_inprocess`).

Workers are separate processes so that importing litellm (seconds, hundreds of MB, and
background tasks) never slows the polyroute measurement, and so that neither shares a GIL
with the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import procs
from bench.clients import Call, build_calls, model_name
from bench.stats import added, ratio, summary

__all__ = ["InProcessConfig", "run_inprocess"]

MARK = "@@bench "
KINDS = ("chat", "stream")


# --------------------------------------------------------------------------- worker side


async def _time_one(call: Call, lat: list[int], ttft: list[int], errs: list[str]) -> None:
    t0 = time.perf_counter_ns()
    try:
        first = await call()
    except Exception as exc:
        errs.append(f"{type(exc).__name__}: {exc}"[:300])
        return
    lat.append(time.perf_counter_ns() - t0)
    if first is not None:
        ttft.append(first - t0)


async def run_variants(calls: dict[str, Call], variants: Sequence[str], n: int, concurrency: int) -> dict[str, Any]:
    """Time ``n`` calls of each variant at ``concurrency``; latencies and TTFTs in ns."""
    out: dict[str, Any] = {v: {"lat": [], "ttft": [], "errors": [], "wall": 0} for v in variants}
    if concurrency <= 1:
        for i in range(n):
            k = i % len(variants)
            for v in (*variants[k:], *variants[:k]):
                r = out[v]
                await _time_one(calls[v], r["lat"], r["ttft"], r["errors"])
        return out
    for v in variants:
        r = out[v]
        remaining = n

        async def worker(call: Call = calls[v], r: dict[str, Any] = r) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await _time_one(call, r["lat"], r["ttft"], r["errors"])

        t0 = time.perf_counter_ns()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        r["wall"] = time.perf_counter_ns() - t0
    return out


async def _profile(calls: dict[str, Call], variant: str, n: int, concurrency: int, out: str) -> dict[str, Any]:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    result = await run_variants(calls, [variant], n, concurrency)
    profiler.stop()
    Path(out).write_text(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False))
    return {"errors": result[variant]["errors"][:5], "n": len(result[variant]["lat"])}


async def _worker_main(system: str, base_url: str, model: str) -> None:
    loop = asyncio.get_running_loop()
    calls: dict[str, Call] = {}
    for sys_name in ("httpx2", system) if system != "httpx2" else ("httpx2",):
        for kind, call in build_calls(sys_name, base_url, model).items():
            calls[f"{sys_name}.{kind}"] = call
    print(MARK + orjson.dumps({"ready": True, "variants": sorted(calls)}).decode(), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd = orjson.loads(line)
        try:
            if cmd["cmd"] == "quit":
                for name, call in calls.items():
                    if name.endswith(".close"):
                        await call()
                return
            if cmd["cmd"] == "run":
                answer: Any = await run_variants(calls, cmd["variants"], cmd["n"], cmd["concurrency"])
            elif cmd["cmd"] == "profile":
                answer = await _profile(calls, cmd["variant"], cmd["n"], cmd["concurrency"], cmd["out"])
            else:
                answer = {"error": f"unknown command {cmd['cmd']!r}"}
        except Exception:
            answer = {"error": traceback.format_exc()}
        print(MARK + orjson.dumps(answer).decode(), flush=True)


# --------------------------------------------------------------------------- parent side


@dataclass
class Worker:
    """A worker process measuring one system (plus its own httpx2 baseline)."""

    system: str
    proc: subprocess.Popen[str]

    def ask(self, cmd: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(orjson.dumps(cmd).decode() + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                answer = orjson.loads(line[len(MARK) :])
                if isinstance(answer, dict) and "error" in answer and isinstance(answer["error"], str):
                    raise RuntimeError(f"{self.system} worker failed:\n{answer['error']}")
                return answer
        raise RuntimeError(f"{self.system} worker exited (code {self.proc.wait()})")

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _spawn(system: str, base_url: str, model: str, cpus: set[int] | None) -> Worker:
    def pin() -> None:
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)

    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [procs.PYTHON, "-m", "bench.inprocess", "--worker", system, "--base-url", base_url, "--model", model],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        preexec_fn=pin if cpus else None,  # noqa: PLW1509 - only sets CPU affinity
    )
    return Worker(system, proc)


@dataclass
class InProcessConfig:
    systems: tuple[str, ...] = ("polyroute", "litellm")
    concurrencies: tuple[int, ...] = (1, 64)
    rounds: int = 5
    serial_calls: int = 400  # per round, per variant, at concurrency 1
    concurrent_calls: int = 1280  # per round, per variant, at higher concurrency
    warmup: int = 200
    tokens: int = 16
    profile_dir: Path | None = None
    cpus: set[int] | None = None
    samples: dict[str, list[int]] = field(default_factory=dict)


def _rotate(items: Sequence[Any], k: int) -> list[Any]:
    k %= max(1, len(items))
    return [*items[k:], *items[:k]]


def _progress(msg: str) -> None:
    print(f"  [inprocess] {msg}", file=sys.stderr, flush=True)


def _merge(acc: dict[str, dict[str, Any]], key: str, part: dict[str, Any]) -> None:
    slot = acc.setdefault(key, {"lat": [], "ttft": [], "errors": [], "wall": 0})
    slot["lat"].extend(part["lat"])
    slot["ttft"].extend(part["ttft"])
    slot["errors"].extend(part["errors"])
    slot["wall"] += part["wall"]


def _worker_variants(system: str, kind: str) -> list[str]:
    return [f"httpx2.{kind}", f"{system}.{kind}"]


def run_inprocess(base_url: str, config: InProcessConfig) -> dict[str, Any]:
    """Measure every system at every concurrency; returns summaries, ratios and raw samples."""
    model = model_name(config.tokens, 0)
    workers = [_spawn(s, base_url, model, config.cpus) for s in config.systems]
    raw: dict[str, dict[str, Any]] = {}  # "<worker>/<variant>@<c>" -> samples
    try:
        for w in workers:
            w.read()  # ready
        _progress("workers ready: " + ", ".join(w.system for w in workers))
        # Concurrency 1 is measured first, before any burst: a burst leaves dozens of idle
        # keep-alive connections in each httpx2 pool, and httpx2 then checks every one of them
        # on every request (about +0.5 ms per call here), which is not what a caller at
        # concurrency 1 sees.
        # Chat and stream calls are timed in separate passes: interleaved through one client,
        # a polyroute stream (which does not return its connection to the pool) slows the
        # chat call after it, and the two targets are about each kind of call on its own.
        for c in sorted(config.concurrencies):
            for w in workers:
                n = config.warmup if c <= 1 else c * 4
                for kind in KINDS:
                    w.ask({"cmd": "run", "variants": _worker_variants(w.system, kind), "n": n, "concurrency": c})
            for rnd in range(config.rounds):
                for w in _rotate(workers, rnd):
                    for kind in _rotate(KINDS, rnd):
                        variants = _rotate(_worker_variants(w.system, kind), rnd)
                        n = config.serial_calls if c <= 1 else config.concurrent_calls
                        result = w.ask({"cmd": "run", "variants": variants, "n": n, "concurrency": c})
                        for v, part in result.items():
                            _merge(raw, f"{w.system}/{v}@{c}", part)
                _progress(f"concurrency {c}: round {rnd + 1}/{config.rounds} done")
        if config.profile_dir is not None:
            config.profile_dir.mkdir(parents=True, exist_ok=True)
            for w in workers:
                if w.system != "polyroute":
                    continue
                for kind in KINDS:
                    for c in config.concurrencies:
                        out = config.profile_dir / f"profile-inprocess-{kind}-c{c}.txt"
                        w.ask(
                            {
                                "cmd": "profile",
                                "variant": f"polyroute.{kind}",
                                "n": max(config.serial_calls, config.concurrent_calls),
                                "concurrency": c,
                                "out": str(out),
                            }
                        )
            _progress(f"profiles written to {config.profile_dir}")
    finally:
        for w in workers:
            w.close()
    return _summarise(raw, config)


def _summarise(raw: dict[str, dict[str, Any]], config: InProcessConfig) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    samples: dict[str, list[int]] = {}
    errors: dict[str, list[str]] = {}
    for system in config.systems:
        for c in config.concurrencies:
            for kind in KINDS:
                sys_raw = raw.get(f"{system}/{system}.{kind}@{c}")
                base_raw = raw.get(f"{system}/httpx2.{kind}@{c}")
                if sys_raw is None or base_raw is None:
                    continue
                s = summary(sys_raw["lat"], errors=len(sys_raw["errors"]), wall_ns=sys_raw["wall"])
                b = summary(base_raw["lat"], errors=len(base_raw["errors"]), wall_ns=base_raw["wall"])
                row: dict[str, Any] = {
                    "system": system,
                    "kind": kind,
                    "concurrency": c,
                    "system_stats": s,
                    "baseline_stats": b,
                    "added": added(s, b),
                }
                if kind == "stream":
                    st = summary(sys_raw["ttft"])
                    bt = summary(base_raw["ttft"])
                    row["ttft_stats"] = st
                    row["baseline_ttft_stats"] = bt
                    row["added_ttft"] = added(st, bt)
                rows.append(row)
                samples[f"{system} {kind} c{c}"] = sys_raw["lat"]
                samples[f"httpx2 (in {system} worker) {kind} c{c}"] = base_raw["lat"]
                if sys_raw["errors"] or base_raw["errors"]:
                    errors[f"{system} {kind} c{c}"] = (sys_raw["errors"] + base_raw["errors"])[:5]
    ratios: list[dict[str, Any]] = []
    by_key = {(r["system"], r["kind"], r["concurrency"]): r for r in rows}
    for c in config.concurrencies:
        for kind in KINDS:
            p, lt = by_key.get(("polyroute", kind, c)), by_key.get(("litellm", kind, c))
            if p is None or lt is None:
                continue
            entry = {
                "kind": kind,
                "concurrency": c,
                "polyroute_added_p50_us": p["added"]["p50_us"],
                "litellm_added_p50_us": lt["added"]["p50_us"],
                "ratio_p50": ratio(p["added"]["p50_us"], lt["added"]["p50_us"]),
                "ratio_p99": ratio(p["added"]["p99_us"], lt["added"]["p99_us"]),
            }
            if kind == "stream":
                entry["ratio_ttft_p50"] = ratio(p["added_ttft"]["p50_us"], lt["added_ttft"]["p50_us"])
            ratios.append(entry)
    config.samples = samples
    return {"rows": rows, "ratios": ratios, "errors": errors}


# --------------------------------------------------------------------------- CLI


def format_table(result: dict[str, Any]) -> str:
    """The in-process rows as a markdown table."""
    head = (
        "| system | call | conc. | p50 ms | p99 ms | httpx2 p50 ms | httpx2 p99 ms | added p50 us | added p99 us "
        "| added TTFT p50 us | calls/s | errors |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = []
    for r in result["rows"]:
        s, b, a = r["system_stats"], r["baseline_stats"], r["added"]
        ttft = f"{r['added_ttft']['p50_us']:.0f}" if "added_ttft" in r else "-"
        rps = f"{s['rps']:.0f}" if "rps" in s and r["concurrency"] > 1 else "-"
        lines.append(
            f"| {r['system']} | {r['kind']} | {r['concurrency']} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} "
            f"| {b['p50_ms']:.3f} | {b['p99_ms']:.3f} | {a['p50_us']:.0f} | {a['p99_us']:.0f} | {ttft} | {rps} "
            f"| {s['errors']} |"
        )
    table = head + "\n".join(lines) + "\n"
    if result["ratios"]:
        table += "\n| call | conc. | polyroute added p50 us | litellm added p50 us | polyroute / litellm (p50) |"
        table += " (p99) | (TTFT p50) |\n|---|--:|--:|--:|--:|--:|--:|\n"
        for q in result["ratios"]:
            ttft = f"{q['ratio_ttft_p50']:.3f}" if "ratio_ttft_p50" in q else "-"
            table += (
                f"| {q['kind']} | {q['concurrency']} | {q['polyroute_added_p50_us']:.0f} "
                f"| {q['litellm_added_p50_us']:.0f} | {q['ratio_p50']:.3f} | {q['ratio_p99']:.3f} | {ttft} |\n"
            )
    return table


@contextlib.contextmanager
def upstream(logs: Path, cpus: set[int] | None) -> Iterator[procs.Child]:
    port = procs.free_port()
    child = procs.start(
        "upstream",
        [procs.PYTHON, "-m", "bench.upstream", "--port", str(port)],
        logs=logs,
        cpus=cpus,
        port=port,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        if not procs.wait_port(port, 15, child.proc):
            raise RuntimeError(f"the fake upstream did not start:\n{child.log_tail()}")
        yield child
    finally:
        child.stop()


def polyroute_failed(result: dict[str, Any]) -> list[str]:
    """Why the polyroute rows count as failed (errors seen), empty when they did not."""
    return [
        f"polyroute {r['kind']} c{r['concurrency']}: {r['system_stats']['errors']} errors"
        for r in result["rows"]
        if r["system"] == "polyroute" and r["system_stats"]["errors"]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="in-process overhead of polyroute (and litellm) over bare httpx2")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke test, ~20 s)")
    parser.add_argument("--systems", default="polyroute,litellm")
    parser.add_argument("--profile", action="store_true", help="also write pyinstrument profiles of polyroute")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(_worker_main(args.worker, args.base_url, args.model))
        return 0
    root = Path(__file__).resolve().parent
    results = root / "results" / ("quick" if args.quick else "")
    cfg = InProcessConfig(systems=tuple(s for s in args.systems.split(",") if s))
    if args.quick:
        cfg.rounds, cfg.serial_calls, cfg.concurrent_calls, cfg.warmup = 3, 200, 640, 100
    if args.profile:
        cfg.profile_dir = results
    up_cpus, sut_cpus = cpu_split()
    cfg.cpus = sut_cpus
    with tempfile.TemporaryDirectory(prefix="polyroute-bench-") as logs, upstream(Path(logs), up_cpus) as up:
        result = run_inprocess(f"http://127.0.0.1:{up.port}/v1", cfg)
    print(format_table(result))
    for key, errs in result["errors"].items():
        print(f"errors in {key}: {errs}", file=sys.stderr)
    if args.out:
        args.out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    failed = polyroute_failed(result)
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


def cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """(upstream CPUs, system-under-test CPUs): one core each when there are at least two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return {available[-1]}, set(available[:-1])


if __name__ == "__main__":
    sys.exit(main())
