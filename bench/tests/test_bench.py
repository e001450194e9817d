"""Checks of the benchmark's own parts: the fake upstream's wire format, wrk driving, statistics,
and the target verdicts. Run with ``pytest bench/tests`` (they take a few seconds)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import httpx2
import orjson
import pytest

from bench import loadgen, procs, report, stats
from bench.clients import build_calls
from bench.inprocess import run_variants
from bench.targets import WrkRequest, upstream_target
from bench.upstream import shape, stream_events


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Child]:
    port = procs.free_port()
    logs = tmp_path_factory.mktemp("logs")
    child = procs.start("upstream", [procs.PYTHON, "-m", "bench.upstream", "--port", str(port)], logs=logs, port=port)
    assert procs.wait_port(port, 15, child.proc), child.log_tail()
    yield child
    child.stop()


def _url(up: procs.Child) -> str:
    return f"http://127.0.0.1:{up.port}/v1"


def test_shape_reads_the_model_name() -> None:
    assert shape("bench-t8-d20") == (8, 0.02)
    assert shape("openai/bench-t3-d0") == (3, 0.0)
    assert shape("gpt-4o") == (16, 0.0)


def test_stream_events_frame_every_event_as_one_chunk() -> None:
    events = stream_events("bench-t3-d0", 5, True)
    # role, 3 tokens, finish, usage, [DONE], terminating zero-length chunk
    assert len(events) == 8
    assert events[-1] == b"0\r\n\r\n"
    size, _, rest = events[1].partition(b"\r\n")
    assert int(size, 16) == len(rest) - 2
    assert rest.endswith(b"\n\n\r\n")
    usage = orjson.loads(events[5].split(b"data: ", 1)[1].split(b"\n\n")[0])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3


def test_non_streaming_answer(upstream: procs.Child) -> None:
    r = httpx2.post(
        _url(upstream) + "/chat/completions",
        json={"model": "bench-t4-d0", "messages": [{"role": "user", "content": "one two three"}]},
    )
    body = r.json()
    assert r.status_code == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello there, this"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_streaming_answer_is_paced_and_complete(upstream: procs.Child) -> None:
    payload = {
        "model": "bench-t4-d30",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    arrivals: list[float] = []
    body = b""
    t0 = time.perf_counter()
    with httpx2.stream("POST", _url(upstream) + "/chat/completions", json=payload) as r:
        assert r.headers["content-type"] == "text/event-stream"
        for piece in r.iter_raw():
            arrivals.append(time.perf_counter() - t0)
            body += piece
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    texts = [orjson.loads(e[6:])["choices"] for e in events[:-1]]
    assert "".join(c[0]["delta"].get("content", "") for c in texts if c) == "Hello there, this"
    assert texts[-1] == []  # the usage chunk
    assert arrivals[-1] >= 0.08  # three 30 ms gaps between four tokens


def test_bad_json_is_a_400(upstream: procs.Child) -> None:
    r = httpx2.post(_url(upstream) + "/chat/completions", content=b"{not json")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_every_in_process_client_reads_the_upstream(upstream: procs.Child) -> None:
    async def go() -> dict[str, object]:
        calls = {
            f"{s}.{k}": c
            for s in ("httpx2", "polyroute")
            for k, c in build_calls(s, _url(upstream), "bench-t5-d0").items()
        }
        return await run_variants(calls, sorted(calls), 3, 1) | await run_variants(calls, sorted(calls), 6, 3)

    result = asyncio.run(go())
    for variant, r in result.items():
        assert isinstance(r, dict)
        assert not r["errors"], (variant, r["errors"])
        assert len(r["lat"]) == 6
        if variant.endswith("stream"):
            assert len(r["ttft"]) == 6 and all(0 < t <= lat for t, lat in zip(r["ttft"], r["lat"], strict=True))


def test_lua_strings_survive_quotes_and_non_ascii() -> None:
    assert loadgen._lua_str('a"b\\c\né') == '"a\\"b\\\\c\\010\\195\\169"'


@pytest.mark.skipif(loadgen.available() is None, reason="wrk is not installed")
def test_wrk_drives_the_upstream_and_reports(upstream: procs.Child) -> None:
    target = upstream_target(upstream)
    res = loadgen.run_wrk(target.base, target.chat_request("bench-t16-d0", stream=True), connections=4, duration=1)
    assert res.requests > 100
    assert res.errors == 0
    assert 0 < res.pct(50) <= res.pct(99)
    bad = WrkRequest("POST", (("/nowhere", "{}"),), (("Content-Type", "application/json"),))
    miss = loadgen.run_wrk(target.base, bad, connections=2, duration=1)
    assert miss.error_detail["status"] == miss.requests > 0  # 404s are counted as errors


def test_percentile_and_added() -> None:
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert math.isnan(stats.percentile([], 50))
    a = stats.summary([2_000_000] * 10)
    b = stats.summary([1_500_000] * 10)
    assert stats.added(a, b) == {"p50_us": 500.0, "p99_us": 500.0}
    assert math.isnan(stats.ratio(1.0, 0.0))


def test_targets_say_not_met_with_numbers() -> None:
    results = {
        "inprocess": {
            "rows": [
                {"system": "polyroute", "kind": "chat", "concurrency": 1, "added": {"p50_us": 150.0, "p99_us": 1.0}}
            ],
            "ratios": [
                {
                    "kind": "chat",
                    "concurrency": 1,
                    "polyroute_added_p50_us": 150.0,
                    "litellm_added_p50_us": 3000.0,
                    "ratio_p50": 0.05,
                }
            ],
        },
        "imports": {"polyroute": {"median_ms": 120.0}},
    }
    verdicts = {t["target"]: t for t in report.check_targets(results)}
    assert verdicts["in-process added median <= 100 us (non-streaming, c=1)"]["met"] is False
    assert verdicts["in-process added >= 10x below litellm.Router (c=1)"]["met"] is True
    assert "20x" in verdicts["in-process added >= 10x below litellm.Router (c=1)"]["measured"]
    assert verdicts["import polyroute <= 150 ms"]["met"] is True
