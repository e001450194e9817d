"""``python -m bench [--quick]``: the whole benchmark in one run, results in ``bench/results/``.

1. starts the fake upstream (:mod:`bench.upstream`) and measures its capacity with wrk;
2. in-process overhead of polyroute's Router and litellm.Router over bare httpx2 (:mod:`bench.inprocess`);
3. HTTP: polyroute serve, the LiteLLM proxy and AgentOS under wrk, plus time to first token
   and chunk relay (:mod:`bench.serving`, :mod:`bench.ttft`);
4. the sustained scenario, 100 streaming sessions (:mod:`bench.scenario`);
5. import time and memory (:mod:`bench.imports`);
then writes ``results.md``, ``results.json`` and ``latency.png`` (``bench/results/quick/`` for
``--quick``). It asserts nothing about speed, but exits 1 when polyroute itself failed a
request anywhere, so CI can run ``--quick`` as a smoke test.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import imports, inprocess, loadgen, procs, report, scenario, serving
from bench.targets import FAST_MODEL, upstream_target

ROOT = Path(__file__).resolve().parent
SECTIONS = ("inprocess", "http", "scenario", "imports")


def _progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} x {model}, {platform.system()} {platform.release()}"


def _capacity(up: procs.Child, seconds: float, cpus: set[int] | None) -> tuple[float, float]:
    target = upstream_target(up)
    rates = []
    for stream in (False, True):
        req = target.chat_request(FAST_MODEL, stream=stream)
        loadgen.run_wrk(target.base, req, connections=64, duration=1, cpus=cpus)
        rates.append(loadgen.run_wrk(target.base, req, connections=64, duration=seconds, cpus=cpus).rps)
    return rates[0], rates[1]


def _failures(results: dict[str, Any]) -> list[str]:
    """Every place polyroute itself failed a request (the smoke test's only assertion)."""
    out: list[str] = []
    ip = results.get("inprocess")
    if ip:
        out += inprocess.polyroute_failed(ip)
        out += [f"in-process {k}: {v[0]}" for k, v in ip.get("errors", {}).items() if k.startswith("polyroute")]
    http = results.get("http", {}).get("systems", {}).get("polyroute")
    if http:
        if http.get("status") != "ok":
            out.append(
                f"polyroute serve: {http.get('status')}: {http.get('reason') or http.get('log_tail', '')[-800:]}"
            )
        for r in http.get("rows", []):
            if r["errors"]:
                out.append(f"HTTP {r['endpoint']} c{r['concurrency']}: {r['errors']} errors {r['error_detail']}")
        for key, e in http.get("ttft", {}).get("endpoints", {}).items():
            if key.startswith("polyroute/") and (e["error_count"] or e.get("relay_errors")):
                out.append(f"streaming {key}: {e['errors'][:2]}")
    sc = results.get("scenario", {}).get("systems", {}).get("polyroute")
    if sc and (sc.get("status") != "ok" or sc.get("errors")):
        out.append(
            f"scenario: {sc.get('status')} {sc.get('reason', '')} errors={sc.get('errors')} {sc.get('error_detail')}"
        )
    imp = results.get("imports", {}).get("polyroute", {})
    if "error" in imp:
        out.append(f"import polyroute: {imp['error']}")
    return out


def _merge_previous(path: Path, results: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """``results`` on top of the previous run's: sections (and scenario systems) not re-run are kept."""
    if not path.exists():
        return results
    previous = orjson.loads(path.read_bytes())
    merged = {k: v for k, v in previous.items() if k in SECTIONS}
    for key in SECTIONS:
        if key not in results:
            continue
        if key == "scenario" and "systems" in merged.get("scenario", {}) and "systems" in results[key]:
            merged["scenario"] = {
                **merged["scenario"],
                **results[key],
                "systems": {**merged["scenario"]["systems"], **results[key]["systems"]},
            }
        else:
            merged[key] = results[key]
    kept = sorted(set(merged) - set(results))
    if kept:
        progress(f"kept from the previous run ({previous['meta']['started']}): {', '.join(kept)}")
    merged["meta"] = {**results["meta"], "merged_from": previous.get("meta", {}).get("started"), "kept": kept}
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the CI smoke test: short runs (about 4 minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--systems", default="polyroute,litellm,agentos", help="systems compared over HTTP")
    parser.add_argument("--scenario-seconds", type=float, default=None, help="override the sustained scenario length")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write pyinstrument (in-process) and py-spy (server) profiles; default on for the full run",
    )
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the sections of the existing results.json that this run does not measure (to re-run one part)",
    )
    parser.add_argument("--scenario-systems", default=None, help="systems for the sustained scenario (comma-separated)")
    args = parser.parse_args(argv)

    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    quick = args.quick
    profile = args.profile if args.profile is not None else not quick
    out_dir = args.out_dir or (ROOT / "results" / ("quick" if quick else ""))
    up_cpus, sut_cpus = inprocess.cpu_split()
    systems = tuple(s for s in args.systems.split(",") if s)
    results: dict[str, Any] = {
        "meta": {
            "mode": "quick" if quick else "full",
            "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": _machine(),
            "python": platform.python_version(),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "upstream_cpus": sorted(up_cpus) if up_cpus else "any",
            "sut_cpus": sorted(sut_cpus) if sut_cpus else "any",
        }
    }
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="polyroute-bench-") as tmp:
        work = Path(tmp)
        with inprocess.upstream(work / "logs", up_cpus) as up:
            if loadgen.available():
                cap, cap_stream = _capacity(up, 2 if quick else 5, sut_cpus)
                results["meta"]["upstream_capacity_rps"] = cap
                results["meta"]["upstream_capacity_stream_rps"] = cap_stream
                _progress(f"upstream capacity: {cap:.0f} req/s, {cap_stream:.0f} streams/s")
            if "inprocess" in sections:
                _progress("in-process overhead")
                cfg = inprocess.InProcessConfig(cpus=sut_cpus)
                # aiohttp is a second baseline (the transport's share), not a system under test
                cfg.systems = ("polyroute", "litellm") if quick else ("polyroute", "litellm", "aiohttp")
                if "litellm" not in systems:
                    cfg.systems = tuple(s for s in cfg.systems if s != "litellm")
                if quick:
                    cfg.rounds, cfg.serial_calls, cfg.concurrent_calls, cfg.warmup = 2, 150, 128, 60
                if profile:
                    cfg.profile_dir = out_dir
                results["inprocess"] = inprocess.run_inprocess(f"http://127.0.0.1:{up.port}/v1", cfg)
                results["inprocess"]["curves"] = report.curves(cfg.samples)
            if "http" in sections:
                _progress("HTTP")
                hcfg = serving.HttpConfig(systems=systems, wrk_cpus=up_cpus, server_cpus=sut_cpus)
                if profile:
                    hcfg.profile_dir = out_dir
                if quick:
                    hcfg.duration, hcfg.warmup, hcfg.ttft_n, hcfg.relay_n = 2, 1, 40, 3
                    hcfg.endpoints = ("chat", "chat-stream", "agent")
                results["http"] = serving.run_http(up, work, hcfg, _progress)
            if "scenario" in sections:
                _progress("sustained scenario")
                scfg = scenario.ScenarioConfig(wrk_cpus=up_cpus, server_cpus=sut_cpus)
                if quick:
                    scfg.duration, scfg.systems = 30, ("polyroute",)
                else:
                    scfg.systems = tuple(s for s in ("polyroute", *systems) if s in ("polyroute", "litellm", "agentos"))
                    scfg.systems = tuple(dict.fromkeys(scfg.systems))
                if args.scenario_systems:
                    scfg.systems = tuple(s for s in args.scenario_systems.split(",") if s)
                if args.scenario_seconds:
                    scfg.duration = scfg.other_duration = args.scenario_seconds
                results["scenario"] = scenario.run_scenario(up, work, scfg, _progress)
        if "imports" in sections:
            _progress("import times")
            labels = list(imports.IMPORTS)
            results["imports"] = imports.measure_imports(2 if quick else 9, _progress, labels)
    results["meta"]["elapsed_s"] = time.monotonic() - t_start
    if args.merge:
        results = _merge_previous(out_dir / "results.json", results, _progress)
    results["targets"] = report.check_targets(results)
    failures = _failures(results)
    results["failures"] = failures
    paths = report.write_results(results, out_dir)
    print(paths["markdown"].read_text())
    _progress(f"done in {results['meta']['elapsed_s']:.0f} s; wrote " + ", ".join(str(p) for p in paths.values()))
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
