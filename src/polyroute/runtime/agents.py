"""``/agents``: create, list, read, update and delete agents.

An agent is a named model choice (``model`` plus ``config.fallbackModel(s)``), an optional
system prompt and tools. It belongs to the API key that created it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from polyroute.runtime.auth import owner_of
from polyroute.runtime.body import read_json, validate
from polyroute.runtime.errors import ApiError
from polyroute.runtime.schemas import AgentConfig, AgentCreate, AgentPatch, tool_schema
from polyroute.runtime.state import Runtime, runtime_of
from polyroute.runtime.views import JSONResponse, agent_json, page, page_params
from polyroute.storage import AgentRecord

__all__ = ["create_agent", "delete_agent", "get_agent", "list_agents", "load_agent", "update_agent"]


def _context(runtime: Runtime) -> dict[str, Any]:
    return {"aliases": runtime.router.aliases}


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident!r} was not found", {kind: ident})


async def load_agent(request: Request) -> AgentRecord:
    agent_id = request.path_params["agent_id"]
    agent = await runtime_of(request).store.get_agent(owner_of(request), agent_id)
    if agent is None:
        raise not_found("agent", agent_id)
    return agent


async def create_agent(request: Request) -> Response:
    runtime = runtime_of(request)
    body = validate(AgentCreate, await read_json(request), _context(runtime))
    agent = await runtime.store.create_agent(
        owner_of(request),
        name=body.name,
        description=body.description,
        model=body.model,
        tools=[tool_schema(t) for t in body.tools],
        config=body.config.stored(),
    )
    return JSONResponse(agent_json(agent), status_code=201, headers={"Location": f"/agents/{agent.id}"})


async def list_agents(request: Request) -> Response:
    limit, cursor = page_params(request)
    agents = await runtime_of(request).store.list_agents(owner_of(request), limit=limit + 1, after=cursor)
    return JSONResponse(page([agent_json(a) for a in agents], limit, "agentId"))


async def get_agent(request: Request) -> Response:
    return JSONResponse(agent_json(await load_agent(request)))


async def update_agent(request: Request) -> Response:
    runtime = runtime_of(request)
    context = _context(runtime)
    patch = validate(AgentPatch, await read_json(request), context)
    agent = await load_agent(request)
    changes: dict[str, Any] = {}
    for field in ("name", "description", "model"):
        if field in patch.model_fields_set:
            changes[field] = getattr(patch, field)
    if patch.tools is not None:
        changes["tools"] = [tool_schema(t) for t in patch.tools]
    if patch.config is not None:
        merged = {**agent.config, **patch.config}
        merged = {k: v for k, v in merged.items() if v is not None}
        changes["config"] = validate(AgentConfig, merged, context, prefix=("config",)).stored()
    if not changes:
        return JSONResponse(agent_json(agent))
    updated = await runtime.store.update_agent(owner_of(request), agent.id, changes)
    if updated is None:
        raise not_found("agent", agent.id)
    return JSONResponse(agent_json(updated))


async def delete_agent(request: Request) -> Response:
    agent_id = request.path_params["agent_id"]
    if not await runtime_of(request).store.delete_agent(owner_of(request), agent_id):
        raise not_found("agent", agent_id)
    return Response(status_code=204)
