"""``polyroute check``: the pre-production checklist in one command.

1. Every deployment the aliases name gets one tiny streamed request (embedding models an
   embedding request): status, latency, time to first token, and the limits configuration
   records for it.
2. Every alias, and every agent stored in the runtime's database (whoever owns it), is
   walked with each candidate forced to fail in turn (a stand-in provider that answers 503
   takes its place at the head of the chain), through the real router, to confirm that the
   next candidate answers.

The database is found as ``polyroute serve`` finds it (the config's ``server:`` section,
then ``POLYROUTE_DATABASE_URL`` / ``POLYROUTE_DATA_DIR``, or ``--database-url``) and only
read: a database that does not exist yet is reported, never created.

The exit code is 1 when some chain cannot serve at all, so CI can gate a deploy on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from polyroute import errors
from polyroute.cli.app import ConfigOpt, EnvOpt, _load, app, err, out
from polyroute.config import build_router
from polyroute.config.schema import Settings
from polyroute.providers.base import CallLimits, Capabilities
from polyroute.router import Router
from polyroute.types import (
    ChatRequest,
    ChatResponse,
    ChatStreamEvent,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    ModelRef,
)

if TYPE_CHECKING:
    from polyroute.storage import AgentRecord

__all__ = ["ChainResult", "Probe", "agent_chains", "alias_chains", "check", "check_router"]

FORCED = "polyroute-check-forced"
PROMPT = "Reply with the single word OK."


class _ForcedFailure:
    """A provider that always answers 503: put at a chain's head, it forces the fallback."""

    name = FORCED
    capabilities = Capabilities(embeddings=True)

    def missing_config(self) -> str | None:
        return None

    def _error(self, model: str) -> errors.ProviderUnavailableError:
        message = "failure forced by polyroute check"
        return errors.ProviderUnavailableError(message, provider=FORCED, model=model, status=503)

    async def chat(self, model: str, request: ChatRequest, limits: CallLimits) -> ChatResponse:
        raise self._error(model)

    async def stream(self, model: str, request: ChatRequest, limits: CallLimits) -> AsyncIterator[ChatStreamEvent]:
        raise self._error(model)
        yield  # pragma: no cover - makes this an async generator

    async def embed(
        self, model: str, inputs: list[str], limits: CallLimits, *, dimensions: int | None = None
    ) -> EmbeddingResponse:
        raise self._error(model)

    async def aclose(self) -> None:
        return None


@dataclass
class Probe:
    ref: str
    status: str
    latency: float | None = None
    ttft: float | None = None
    limits: str = ""


@dataclass
class ChainResult:
    #: what the chain belongs to: ``alias <name>`` or ``agent <name> (<id>)``
    label: str
    chain: list[str]
    serves: bool
    #: candidate -> whether a later candidate answered when it was forced to fail
    survives: dict[str, bool]
    #: why the chain could not be built (an agent naming an alias this config lacks)
    problem: str = ""


@dataclass
class Chain:
    """The candidates one alias or agent would try, in order (empty with ``problem`` when unresolvable)."""

    label: str
    refs: list[ModelRef] = field(default_factory=list)
    problem: str = ""


def alias_chains(router: Router, aliases: Sequence[str]) -> list[Chain]:
    return [Chain(f"alias {alias}", router.candidates(alias)) for alias in aliases]


def agent_chains(router: Router, agents: Sequence[AgentRecord]) -> list[Chain]:
    """Each agent's chain: its model, then ``config.fallbackModel(s)``, as the runtime expands them."""
    from polyroute.runtime.history import fallbacks_of, model_spec

    chains = []
    for agent in agents:
        label = f"agent {agent.name} ({agent.id})"
        try:
            chains.append(Chain(label, router.candidates(model_spec(agent.model), fallbacks_of(agent.config))))
        except (errors.PolyrouteError, ValueError) as exc:
            chains.append(Chain(label, problem=str(exc)[:120]))
    return chains


def _is_embedding(ref: ModelRef) -> bool:
    return "embed" in ref.model_id.lower()


def _limits(router: Router, ref: ModelRef) -> str:
    for policy in router.policies.values():
        for d in policy.deployments:
            if d.key == str(ref):
                known = {"context": d.context_window, "max output": d.max_output_tokens}
                return ", ".join(f"{name} {value}" for name, value in known.items() if value)
    return ""


async def _probe(router: Router, ref: ModelRef, seconds: float) -> Probe:
    loop = asyncio.get_running_loop()
    start = loop.time()
    ttft: float | None = None
    try:
        if _is_embedding(ref):
            await router.embed(EmbeddingRequest(model=ref, input=["ok"], timeout=seconds))
        else:
            request = ChatRequest(model=ref, messages=[Message.user(PROMPT)], max_tokens=8, timeout=seconds)
            async for event in router.stream(request):
                if ttft is None and event.type in ("token", "tool_call", "end"):
                    ttft = loop.time() - start
    except errors.PolyrouteError as exc:
        cause = exc.last_error if isinstance(exc, errors.AllCandidatesFailedError) and exc.last_error else exc
        return Probe(str(ref), f"{cause.code}: {cause.message}"[:80], limits=_limits(router, ref))
    return Probe(str(ref), "ok", loop.time() - start, ttft, _limits(router, ref))


async def _answers(router: Router, chain: list[ModelRef], seconds: float) -> bool:
    """Does the chain answer with a forced failure at its head?"""
    if not chain:
        return False
    head = ModelRef(provider=FORCED, model_id=chain[0].model_id)
    try:
        if _is_embedding(chain[0]):
            await router.embed(EmbeddingRequest(model=head, fallbacks=list(chain), input=["ok"], timeout=seconds))
        else:
            messages = [Message.user(PROMPT)]
            request = ChatRequest(model=head, fallbacks=list(chain), messages=messages, max_tokens=8, timeout=seconds)
            await router.chat(request)
    except errors.PolyrouteError:
        return False
    return True


async def check_router(
    router: Router, chains: Sequence[Chain], seconds: float
) -> tuple[list[Probe], list[ChainResult]]:
    """Probe every deployment the chains name, then each chain with each candidate forced to fail."""
    router.register(_ForcedFailure(), name=FORCED)
    refs = list({str(r): r for chain in chains for r in chain.refs}.values())
    probes = list(await asyncio.gather(*(_probe(router, ref, seconds) for ref in refs)))
    results = []
    for chain in chains:
        refs = chain.refs
        serves = await _answers(router, refs, seconds)
        survives = {str(ref): await _answers(router, refs[i + 1 :], seconds) for i, ref in enumerate(refs[:-1])}
        results.append(ChainResult(chain.label, [str(r) for r in refs], serves, survives, chain.problem))
    return probes, results


def _database_url(settings: Settings, environ: dict[str, str], override: str | None) -> str | None:
    """The runtime's database URL, resolved as ``polyroute serve`` does; None without the server extra."""
    try:
        from polyroute.runtime.settings import ServerSettings
    except ImportError:
        return None
    server: dict[str, Any] = dict(settings.server)
    if override:
        server["databaseUrl"] = override
    try:
        return ServerSettings.from_mapping(server, environ).database_url
    except ValueError as exc:
        err.print(f"[red]config error:[/red] {settings.source}: server: {exc}")
        raise typer.Exit(2) from None


def _read_agents(url: str) -> list[AgentRecord] | None:
    """Every stored agent (None: no database yet); exit 1 when the database cannot be read."""
    from sqlalchemy.exc import SQLAlchemyError

    from polyroute.storage.admin import all_agents

    try:
        return asyncio.run(all_agents(url))
    except (SQLAlchemyError, OSError) as exc:  # report it without the URL's credentials or the driver's text
        err.print(f"[red]cannot read agents from {_hidden_password(url)}:[/red] {type(exc).__name__}")
        raise typer.Exit(1) from None


def _hidden_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _print(probes: list[Probe], results: list[ChainResult]) -> None:
    table = Table(title="deployments")
    for column in ("deployment", "status", "latency ms", "ttft ms", "limits"):
        table.add_column(column)
    for p in probes:
        status = "[green]ok[/green]" if p.status == "ok" else f"[red]{p.status}[/red]"
        table.add_row(p.ref, status, _ms(p.latency), _ms(p.ttft), p.limits)
    out.print(table)
    chains = Table(title="chains: each candidate forced to fail in turn")
    for column in ("alias / agent", "candidates", "serves", "survives the failure of"):
        chains.add_column(column)
    for r in results:
        marks = [f"{ref} [green]yes[/green]" if ok else f"{ref} [red]no[/red]" for ref, ok in r.survives.items()]
        serves = "[green]yes[/green]" if r.serves else "[red]no[/red]"
        candidates = " -> ".join(r.chain) or (f"[red]{r.problem}[/red]" if r.problem else "-")
        chains.add_row(r.label, candidates, serves, "\n".join(marks) or "-")
    out.print(chains)


@app.command()
def check(
    alias: Annotated[list[str] | None, typer.Option("--alias", "-a", help="only these aliases (repeatable)")] = None,
    agent: Annotated[
        list[str] | None, typer.Option("--agent", help="only these stored agents, by name or id (repeatable)")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="the runtime's database (default: as polyroute serve)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds allowed per request")] = 30.0,
    config: ConfigOpt = None,
    env_file: EnvOpt = Path(".env"),
) -> None:
    """Probe every deployment, then force each alias's and agent's candidates to fail in turn."""
    settings, environ = _load(config, env_file)
    try:
        router = build_router(settings, environ)
    except errors.ConfigError as exc:
        err.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None
    names = alias if alias is not None else ([] if agent else list(router.aliases))
    unknown = [n for n in names if n not in router.aliases]
    if unknown:
        out.print(f"[red]unknown alias:[/red] {', '.join(unknown)}")
        raise typer.Exit(2)
    want_agents = agent is not None or alias is None
    url = _database_url(settings, environ, database_url) if want_agents else None
    records = _read_agents(url) if url else None
    if agent:
        missing = [a for a in agent if not any(a in (r.id, r.name) for r in records or ())]
        if missing:
            out.print(f"[red]unknown agent:[/red] {', '.join(missing)}")
            raise typer.Exit(2)
        records = [r for r in records or () if r.id in agent or r.name in agent]
    chains = alias_chains(router, names) + agent_chains(router, records or [])

    async def run() -> tuple[list[Probe], list[ChainResult]]:
        async with router:
            return await check_router(router, chains, timeout)

    probes, results = asyncio.run(run())
    _print(probes, results)
    if want_agents and url is None:
        out.print("agents not checked: the runtime needs its extra (pip install 'polyroute[server]')")
    elif url is not None and records is None:
        out.print("no agents (database not created)")
    elif url is not None and not records:
        out.print("no agents")
    if not all(r.serves for r in results):
        raise typer.Exit(1)
