"""``polyroute status``: each deployment's breaker state, error rate, latency and load.

Against a running server (``--url``) it reads ``GET /v1/router/health``; without one it
builds the configured router and shows what that router knows, which before any traffic is
the list of deployments the aliases resolve to, all closed. Both paths print the same
table from the same JSON shape (``RouterHealth.to_dict()``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from polyroute.cli.app import ConfigOpt, EnvOpt, _router, app, err, out

__all__ = ["render", "status"]

_STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "red", "auth_failed": "red"}


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def render(health: dict[str, Any], *, title: str) -> Table:
    """A table of the ``RouterHealth.to_dict()`` shape."""
    load = f"{health['inFlight']}/{health['maxConcurrency']} in flight, {health['waiting']} waiting"
    if health.get("sharedState"):
        load += f", shared state {health['sharedState']}"
    table = Table(title=f"{title}: {load}")
    for column in ("deployment", "state", "errors", "calls", "busy", "latency ms", "ttft ms", "last error"):
        table.add_column(column)
    for d in health["deployments"]:
        style = _STATE_STYLE.get(d["state"], "white")
        retry = f" ({d['retryInMs'] / 1000:.0f}s)" if d["retryInMs"] else ""
        key = f" [dim]key {d['keyId']}[/dim]" if d["keyId"] else ""
        state = f"[{style}]{d['state']}{retry}[/{style}]"
        remote = d.get("remoteState")  # servers before shared probes did not send it
        if remote:
            wait = f" {d['remoteRetryInMs'] / 1000:.0f}s" if d.get("remoteRetryInMs") else ""
            state += f"\n[{_STATE_STYLE.get(remote, 'white')}]{remote} on another replica{wait}[/]"
        table.add_row(
            f"{d['provider']}:{d['model']}{key}",
            state,
            f"{d['errorRate'] * 100:.0f}% of {d['windowCalls']}",
            f"{d['calls']} ({d['failures']} failed)",
            str(d["inFlight"]),
            f"{_ms(d['latencyEwmaMs'])} / {_ms(d['latencyP50Ms'])}",
            f"{_ms(d['ttftEwmaMs'])} / {_ms(d['ttftP50Ms'])}",
            d["lastError"] or "",
        )
    table.caption = "latency and ttft: moving average / median of recent calls"
    return table


def _fetch(url: str, token: str | None) -> dict[str, Any]:
    import httpx2

    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx2.get(url.rstrip("/") + "/v1/router/health", headers=headers, timeout=10.0)
    except httpx2.HTTPError as exc:
        err.print(f"[red]cannot reach {url}:[/red] {type(exc).__name__}")
        raise typer.Exit(1) from None
    if response.status_code != 200:
        err.print(f"[red]{url} answered HTTP {response.status_code}[/red]")
        raise typer.Exit(1)
    body: dict[str, Any] = response.json()
    return body


@app.command()
def status(
    url: Annotated[str | None, typer.Option("--url", help="a running polyroute server to ask")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="POLYROUTE_TOKEN", help="bearer for --url")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON")] = False,
    config: ConfigOpt = None,
    env_file: EnvOpt = Path(".env"),
) -> None:
    """Each deployment's circuit state, error rate, latency, time to first token and load."""
    if url is not None:
        health, title = _fetch(url, token), url
    else:
        health, title = _router(config, env_file).health().to_dict(), "configured router (no traffic yet)"
    if as_json:
        out.print_json(json.dumps(health))
        return
    out.print(render(health, title=title))
    if not health.get("healthy", True):
        raise typer.Exit(1)
