"""Turning a run's results into ``results.md``, ``results.json`` and ``latency.png``.

The markdown has one table per measurement and a closing table that checks each of issue 7's
targets against this run's numbers, saying "met" or "not met" with the numbers, or "n/a"
with the reason when a system could not run here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from bench.inprocess import format_table
from bench.stats import percentile

__all__ = ["check_targets", "render_markdown", "write_chart", "write_results"]


def _f(value: Any, fmt: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _http_table(http: dict[str, Any]) -> str:
    if "skipped" in http:
        return f"HTTP benchmark skipped: {http['skipped']}\n"
    added = {(a["system"], a["endpoint"], a["concurrency"]): a for a in http.get("added", [])}
    lines = [
        "| system | endpoint | conc. | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    for name, info in http["systems"].items():
        if info.get("status") != "ok":
            notes.append(f"- **{name}**: {info.get('status')}: {info.get('reason') or info.get('log_tail', '')[-500:]}")
        for r in info.get("rows", []):
            a = added.get((name, r["endpoint"], r["concurrency"]), {})
            lines.append(
                _row(
                    [
                        name,
                        r["endpoint"],
                        str(r["concurrency"]),
                        _f(r["rps"], ".0f"),
                        _f(r["p50_ms"]),
                        _f(r["p99_ms"]),
                        _f(a.get("added_p50_ms")),
                        _f(a.get("added_p99_ms")),
                        f"{r['errors']}" + (f" {r['error_detail']}" if r["errors"] else ""),
                    ]
                )
            )
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def _ttft_table(http: dict[str, Any]) -> str:
    lines = [
        "| system | endpoint | TTFT p50 ms | TTFT p99 ms | upstream TTFT p50 ms | added p50 ms | added p99 ms "
        "| relay bursts (median) | relayed unbuffered | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, info in http.get("systems", {}).items():
        t = info.get("ttft")
        if not t:
            continue
        up = t["endpoints"].get("upstream/chat-stream", {}).get("ttft", {})
        for key, e in t["endpoints"].items():
            if key.startswith("upstream/"):
                continue
            lines.append(
                _row(
                    [
                        name,
                        key.split("/", 1)[1],
                        _f(e["ttft"]["p50_ms"]),
                        _f(e["ttft"]["p99_ms"]),
                        _f(up.get("p50_ms")),
                        _f(e.get("added_ttft_p50_us", math.nan) / 1000),
                        _f(e.get("added_ttft_p99_us", math.nan) / 1000),
                        f"{e.get('relay_bursts_median', '-')} of {t['relay_tokens']}",
                        "yes" if e.get("relay_unbuffered") else "no",
                        str(e["error_count"] + e.get("relay_errors", 0)),
                    ]
                )
            )
    return "\n".join(lines) + "\n"


def _memory_table(results: dict[str, Any]) -> str:
    imports = results.get("imports", {})
    http = results.get("http", {}).get("systems", {})
    lines = ["| what | import median ms | RSS added by import MB |", "|---|--:|--:|"]
    for label, r in imports.items():
        if "error" in r:
            lines.append(_row([label, "failed", r["error"][:120]]))
        else:
            lines.append(_row([label, _f(r["median_ms"], ".0f"), _f(r["rss_added_mb"], ".1f")]))
    lines += [
        "",
        "| server | idle RSS MB | peak RSS under load MB | RSS after load MB | start-up s |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, info in http.items():
        if name == "upstream" or info.get("status") not in ("ok", "crashed"):
            continue
        lines.append(
            _row(
                [
                    name,
                    _f(info.get("idle_rss_mb"), ".1f"),
                    _f(info.get("load_rss_peak_mb"), ".1f"),
                    _f(info.get("rss_after_load_mb"), ".1f"),
                    _f(info.get("startup_s"), ".1f"),
                ]
            )
        )
    return "\n".join(lines) + "\n"


def _scenario_table(sc: dict[str, Any]) -> str:
    if "skipped" in sc:
        return f"Scenario skipped: {sc['skipped']}\n"
    lines = [
        "| system | duration s | streams | streams/s | p50 ms | p95 ms | p99 ms | error rate | idle RSS MB "
        "| peak RSS MB | RSS growth after warm-up |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, i in sc.get("systems", {}).items():
        if i.get("status") not in ("ok", "crashed"):
            lines.append(_row([name, f"{i.get('status')}: {i.get('reason', '')[:300]}", *["-"] * 9]))
            continue
        lines.append(
            _row(
                [
                    name,
                    _f(i["duration_s"], ".0f"),
                    str(i["streams"]),
                    _f(i["streams_per_s"], ".0f"),
                    _f(i["p50_ms"], ".1f"),
                    _f(i["p95_ms"], ".1f"),
                    _f(i["p99_ms"], ".1f"),
                    f"{i['error_rate'] * 100:.3f} %",
                    _f(i["rss_idle_mb"], ".1f"),
                    _f(i["rss_peak_mb"], ".1f"),
                    f"{_f(i.get('rss_growth_pct'), '+.1f')} %",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's targets, each with the measured value and met / not met / n/a."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None, why: str = "") -> None:
        out.append({"target": target, "measured": measured, "met": met, "why": why})

    ip = results.get("inprocess", {})
    chat = _find(ip.get("rows", []), system="polyroute", kind="chat", concurrency=1)
    if chat:
        v = chat["added"]["p50_us"]
        add("in-process added median <= 100 us (non-streaming, c=1)", f"{v:.0f} us", v <= 100)
    ratio = _find(ip.get("ratios", []), kind="chat", concurrency=1)
    if ratio:
        r = ratio["ratio_p50"]
        add(
            "in-process added >= 10x below litellm.Router (c=1)",
            f"polyroute {ratio['polyroute_added_p50_us']:.0f} us vs litellm {ratio['litellm_added_p50_us']:.0f} us "
            f"({1 / r if r and r > 0 else math.nan:.0f}x)",
            r <= 0.1 if r == r else None,
        )
    else:
        add("in-process added >= 10x below litellm.Router (c=1)", "-", None, "litellm was not measured")
    http = results.get("http", {})
    systems = http.get("systems", {})
    added = http.get("added", [])
    a16 = _find(added, system="polyroute", endpoint="chat", concurrency=16)
    if a16:
        add("HTTP added p50 <= 1 ms at c=16", f"{a16['added_p50_ms']:.2f} ms", a16["added_p50_ms"] <= 1)
        add("HTTP added p99 <= 3 ms at c=16", f"{a16['added_p99_ms']:.2f} ms", a16["added_p99_ms"] <= 3)
    prow = {(r["endpoint"], r["concurrency"]): r for r in systems.get("polyroute", {}).get("rows", [])}

    def competitor(name: str, endpoint: str, factor: float, label: str) -> None:
        mine = prow.get((endpoint, 64))
        info = systems.get(name, {})
        theirs = _find(info.get("rows", []), endpoint=endpoint, concurrency=64)
        if mine is None:
            add(label, "-", None, "polyroute serve was not measured")
        elif theirs is None:
            add(
                label, f"polyroute {mine['rps']:.0f} req/s", None, f"{name}: {info.get('reason') or info.get('status')}"
            )
        else:
            ok = mine["rps"] >= factor * theirs["rps"] and mine["errors"] == 0
            add(
                label,
                f"polyroute {mine['rps']:.0f} req/s ({mine['errors']} errors) vs {name} {theirs['rps']:.0f} req/s "
                f"({mine['rps'] / theirs['rps'] if theirs['rps'] else math.nan:.1f}x)",
                ok,
            )

    competitor("litellm", "chat", 5.0, "req/s at c=64 >= 5x LiteLLM proxy, zero errors (/v1/chat/completions)")
    competitor("agentos", "agent", 1.0000001, "req/s at c=64 above AgentOS, zero errors (agent message)")
    t = systems.get("polyroute", {}).get("ttft", {}).get("endpoints", {}).get("polyroute/chat-stream")
    if t:
        v = t.get("added_ttft_p50_us", math.nan) / 1000
        add("streaming adds <= 1 ms to the first token (/v1, c=1, p50)", f"{v:.2f} ms", v <= 1)
        add(
            "relays each chunk without buffering",
            f"{t.get('relay_bursts_median')} bursts for {systems['polyroute']['ttft']['relay_tokens']} tokens",
            bool(t.get("relay_unbuffered")),
        )
    imp = results.get("imports", {}).get("polyroute", {})
    if "median_ms" in imp:
        add("import polyroute <= 150 ms", f"{imp['median_ms']:.0f} ms", imp["median_ms"] <= 150)
    sc = results.get("scenario", {}).get("systems", {}).get("polyroute", {})
    idle = systems.get("polyroute", {}).get("idle_rss_mb") or sc.get("rss_idle_mb")
    if idle:
        add("server RSS idle <= 80 MB", f"{idle:.1f} MB", idle <= 80)
    if "rss_growth_pct" in sc:
        g = sc["rss_growth_pct"]
        add(
            "server RSS flat (<= 5 % growth) over the sustained scenario",
            f"{g:+.1f} % over {sc['duration_s']:.0f} s (peak {sc['rss_peak_mb']:.1f} MB)",
            g <= 5,
        )
    if sc.get("status") == "ok":
        add("sustained scenario: zero errors", f"error rate {sc['error_rate'] * 100:.3f} %", sc["errors"] == 0)
    return out


def render_markdown(results: dict[str, Any], chart: str | None) -> str:
    meta = results["meta"]
    parts = [
        f"# polyroute benchmark ({meta['mode']} run)\n",
        f"{meta['started']} on {meta['machine']}; Python {meta['python']}; load average at start "
        f"{meta['loadavg']}. CPUs: upstream on {meta['upstream_cpus']}, system under test on {meta['sut_cpus']}.\n",
        "Fake upstream capacity (wrk, 64 connections, direct): "
        f"**{_f(meta.get('upstream_capacity_rps'), '.0f')} req/s** non-streaming, "
        f"**{_f(meta.get('upstream_capacity_stream_rps'), '.0f')} streams/s** (16 tokens each).\n",
    ]
    if "inprocess" in results:
        parts += ["## In-process: added latency over bare httpx2\n", format_table(results["inprocess"])]
    if "http" in results:
        parts += [
            "## HTTP (wrk)\n",
            _http_table(results["http"]),
            "\n### Time to first token and relay (c=1)\n",
            _ttft_table(results["http"]),
        ]
    if "imports" in results or "http" in results:
        parts += ["## Import time and memory\n", _memory_table(results)]
    if "scenario" in results:
        parts += [
            "## Sustained scenario: 100 streaming sessions, 128-word inputs\n",
            _scenario_table(results["scenario"]),
        ]
    if chart:
        parts.append(f"\n![latency distributions]({chart})\n")
    targets = results.get("targets", [])
    if targets:
        rows = ["| target | measured | result |", "|---|---|---|"]
        for t in targets:
            verdict = "met" if t["met"] else ("n/a: " + t["why"] if t["met"] is None else "NOT met")
            rows.append(f"| {t['target']} | {t['measured']} | {verdict} |")
        parts.append("\n## Issue 7 targets\n\n" + "\n".join(rows) + "\n")
    if results.get("failures"):
        parts.append("\n## polyroute failures\n\n" + "\n".join(f"- {f}" for f in results["failures"]) + "\n")
    return "\n".join(parts)


CURVE_QS = tuple(q / 2 for q in range(1, 200))


def curves(samples: dict[str, list[int]]) -> dict[str, list[float]]:
    """Each sample's latency (ms) at :data:`CURVE_QS`, small enough to keep in the JSON."""
    out = {}
    for label, data in samples.items():
        ms = [s / 1e6 for s in data]
        out[label] = [round(percentile(ms, q), 4) for q in CURVE_QS] if ms else []
    return out


def _style(ax: Any, title: str) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency, ms (log)")
    ax.set_ylabel("percentile")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def write_chart(results: dict[str, Any], path: Path) -> bool:
    """A 2x2 PNG: in-process latency CDFs (chat, stream) and HTTP percentile curves (chat, stream)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    stored = results.get("inprocess", {}).get("curves", {})
    for ax, kind in zip(axes[0], ("chat", "stream"), strict=True):
        for label, values in sorted(stored.items()):
            if f" {kind} c1" not in label or not values:
                continue
            ax.plot(values, CURVE_QS, label=label.replace(f" {kind} c1", ""))
        _style(ax, f"in-process {kind}, concurrency 1 (to last byte)")
    http = results.get("http", {}).get("systems", {})
    for ax, endpoints in zip(axes[1], (("chat", "agent"), ("chat-stream", "agent-stream")), strict=True):
        for name, info in http.items():
            for r in info.get("rows", []):
                if r["endpoint"] in endpoints and r["concurrency"] == 16:
                    pts = r["percentiles_ms"]
                    ax.plot([v for _, v in pts], [p for p, _ in pts], marker=".", label=f"{name} {r['endpoint']}")
        _style(ax, f"HTTP {' / '.join(endpoints)}, 16 connections (wrk)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_results(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = out_dir / "latency.png"
    has_chart = write_chart(results, chart)
    md = out_dir / "results.md"
    md.write_text(render_markdown(results, chart.name if has_chart else None))
    js = out_dir / "results.json"
    js.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return {"markdown": md, "json": js, **({"chart": chart} if has_chart else {})}
