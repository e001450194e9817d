"""``polyroute check``: the pre-production checklist in one command.

1. Every deployment the aliases name gets one tiny streamed request (embedding models an
   embedding request): status, latency, time to first token, and the limits configuration
   records for it.
2. Every alias is walked with each candidate forced to fail in turn (a stand-in provider
   that answers 503 takes its place at the head of the chain), through the real router,
   to confirm that the next candidate answers.

The exit code is 1 when some alias cannot serve at all, so CI can gate a deploy on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from polyroute import errors
from polyroute.cli.app import ConfigOpt, EnvOpt, _router, app, out
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

__all__ = ["Probe", "check", "check_router"]

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
    alias: str
    chain: list[str]
    serves: bool
    #: candidate -> whether a later candidate answered when it was forced to fail
    survives: dict[str, bool]


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


async def check_router(router: Router, aliases: list[str], seconds: float) -> tuple[list[Probe], list[ChainResult]]:
    """Probe every deployment of ``aliases``, then each alias with each candidate forced to fail."""
    router.register(_ForcedFailure(), name=FORCED)
    chains = {alias: router.candidates(alias) for alias in aliases}
    refs = list({str(r): r for chain in chains.values() for r in chain}.values())
    probes = list(await asyncio.gather(*(_probe(router, ref, seconds) for ref in refs)))
    results = []
    for alias, chain in chains.items():
        serves = await _answers(router, chain, seconds)
        survives = {str(ref): await _answers(router, chain[i + 1 :], seconds) for i, ref in enumerate(chain[:-1])}
        results.append(ChainResult(alias, [str(r) for r in chain], serves, survives))
    return probes, results


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


@app.command()
def check(
    alias: Annotated[list[str] | None, typer.Option("--alias", "-a", help="only these aliases (repeatable)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds allowed per request")] = 30.0,
    config: ConfigOpt = None,
    env_file: EnvOpt = Path(".env"),
) -> None:
    """Probe every deployment, then force each alias candidate to fail and confirm the next answers."""
    router = _router(config, env_file)
    names = alias or list(router.aliases)
    unknown = [n for n in names if n not in router.aliases]
    if unknown:
        out.print(f"[red]unknown alias:[/red] {', '.join(unknown)}")
        raise typer.Exit(2)

    async def run() -> tuple[list[Probe], list[ChainResult]]:
        async with router:
            return await check_router(router, names, timeout)

    probes, results = asyncio.run(run())
    table = Table(title="deployments")
    for column in ("deployment", "status", "latency ms", "ttft ms", "limits"):
        table.add_column(column)
    for p in probes:
        status = "[green]ok[/green]" if p.status == "ok" else f"[red]{p.status}[/red]"
        table.add_row(p.ref, status, _ms(p.latency), _ms(p.ttft), p.limits)
    out.print(table)
    chains = Table(title="aliases: each candidate forced to fail in turn")
    for column in ("alias", "serves", "survives the failure of"):
        chains.add_column(column)
    for r in results:
        marks = [f"{ref} [green]yes[/green]" if ok else f"{ref} [red]no[/red]" for ref, ok in r.survives.items()]
        chains.add_row(r.alias, "[green]yes[/green]" if r.serves else "[red]no[/red]", "\n".join(marks) or "-")
    out.print(chains)
    if not all(r.serves for r in results):
        raise typer.Exit(1)
