"""``polyroute`` commands. Each is a thin shell over the library: config -> router -> call.

Errors are printed as one readable line (with the attempt list when a chain failed) and a
non-zero exit code; a traceback is a bug, not an answer.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from polyroute import errors
from polyroute.config import build_provider, build_router, load_environment, load_settings
from polyroute.config.schema import Settings
from polyroute.router import Router
from polyroute.types import ChatRequest, Message

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Many LLM providers behind one API.")
# Piped output gets a wide fixed width so tables stay greppable instead of being truncated.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (default: config/default.yaml)")]
EnvOpt = Annotated[Path, typer.Option("--env-file", help=".env file to read")]


def _load(config: Path | None, env_file: Path) -> tuple[Settings, dict[str, str]]:
    environ = load_environment(env_file)
    try:
        return load_settings(config, environ=environ), environ
    except errors.ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None


def _router(config: Path | None, env_file: Path) -> Router:
    settings, environ = _load(config, env_file)
    try:
        return build_router(settings, environ)
    except errors.ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None


def _report_failure(exc: errors.PolyrouteError) -> None:
    err.print(f"[red]error:[/red] {type(exc).__name__}: {exc.message}")
    for attempt in exc.attempts:
        status = f" HTTP {attempt.status}" if attempt.status else ""
        err.print(
            f"  - {attempt.provider}:{attempt.model} {attempt.outcome} {attempt.error or ''}{status}"
            f" ({attempt.elapsed * 1000:.0f} ms) {attempt.message or ''}"
        )


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="what to ask")],
    model: Annotated[str, typer.Option("--model", "-m", help="model reference or alias")] = "default",
    fallback: Annotated[list[str] | None, typer.Option("--fallback", "-f", help="fallback model (repeatable)")] = None,
    stream: Annotated[bool, typer.Option("--stream", "-s", help="print tokens as they arrive")] = False,
    system: Annotated[str | None, typer.Option("--system", help="system prompt")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    config: ConfigOpt = None,
    env_file: EnvOpt = Path(".env"),
) -> None:
    """Ask one question; print the answer and which provider answered."""
    router = _router(config, env_file)
    messages = ([Message.system(system)] if system else []) + [Message.user(prompt)]
    try:
        request = ChatRequest(
            model=model, fallbacks=fallback or [], messages=messages, max_tokens=max_tokens, temperature=temperature
        )
    except ValueError as exc:
        err.print(f"[red]bad request:[/red] {exc}")
        raise typer.Exit(2) from None

    async def run() -> None:
        async with router:
            if stream:
                async for event in router.stream(request):
                    if event.type == "token":
                        sys.stdout.write(event.delta)
                        sys.stdout.flush()
                    elif event.type == "end" and event.response is not None:
                        sys.stdout.write("\n")
                        reply = event.response
                        _footer(reply.provider, reply.model, reply.latency, reply.usage)
            else:
                response = await router.chat(request)
                out.print(response.text, markup=False, highlight=False)
                _footer(response.provider, response.model, response.latency, response.usage)

    try:
        asyncio.run(run())
    except errors.PolyrouteError as exc:
        _report_failure(exc)
        raise typer.Exit(1) from None


def _footer(provider: str, model: str, latency: float, usage: Any) -> None:
    err.print(
        f"[dim]answered by {provider}:{model} in {latency * 1000:.0f} ms; "
        f"tokens {usage.prompt_tokens} in / {usage.completion_tokens} out[/dim]"
    )


@app.command()
def providers(config: ConfigOpt = None, env_file: EnvOpt = Path(".env")) -> None:
    """The provider matrix: capabilities, and whether each is configured here."""
    settings, environ = _load(config, env_file)
    table = Table(title=f"providers ({settings.source})", padding=(0, 1))
    table.add_column("provider", no_wrap=True)
    for cap in ("chat", "stream", "embed", "tools", "vision", "json"):
        table.add_column(cap, justify="center", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for name, cfg in settings.providers.items():
        try:
            provider = build_provider(name, cfg, environ, source=settings.source)
        except errors.ConfigError as exc:
            table.add_row(name, *[""] * 6, f"[red]{exc.message}[/red]")
            continue
        caps = provider.capabilities.as_dict()
        marks = ["[green]yes[/green]" if caps[k] else "[dim]-[/dim]" for k in caps]
        if not cfg.enabled:
            status = "[dim]disabled[/dim]"
        else:
            missing = provider.missing_config()
            status = f"[yellow]missing {missing}[/yellow]" if missing else "[green]configured[/green]"
        table.add_row(name, *marks, status)
    out.print(table)
    if settings.models:
        aliases = Table(title="model aliases")
        aliases.add_column("alias")
        aliases.add_column("candidates, in order")
        for alias, chain in settings.models.items():
            aliases.add_row(alias, " -> ".join(str(c) for c in chain))
        out.print(aliases)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default from config: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from config: 8080)")] = None,
    config: ConfigOpt = None,
    env_file: EnvOpt = Path(".env"),
) -> None:
    """Run the HTTP runtime: agents, sessions, messages and the OpenAI-compatible API."""
    try:
        from polyroute.runtime import serve as run_server
        from polyroute.runtime.settings import ServerSettings
    except ImportError as exc:
        err.print(f"[red]the server needs its extra:[/red] pip install 'polyroute[server]' ({exc.name} missing)")
        raise typer.Exit(2) from None
    settings, environ = _load(config, env_file)
    server_cfg: dict[str, Any] = dict(settings.server)
    if host is not None:
        server_cfg["host"] = host
    if port is not None:
        server_cfg["port"] = port
    try:
        server_settings = ServerSettings.from_mapping(server_cfg, environ)
    except ValueError as exc:
        err.print(f"[red]config error:[/red] {settings.source}: server: {exc}")
        raise typer.Exit(2) from None
    router = build_router(settings, environ)
    from polyroute.config import disabled_providers

    run_server(router, server_settings, disabled_providers=disabled_providers(settings))


def main() -> None:
    app()
