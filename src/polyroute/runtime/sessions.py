"""``/agents/{agentId}/sessions``: conversations with an agent, optionally tagged with a user id."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from polyroute.runtime.agents import load_agent, not_found
from polyroute.runtime.auth import owner_of
from polyroute.runtime.body import read_json, validate
from polyroute.runtime.schemas import SessionCreate
from polyroute.runtime.state import runtime_of
from polyroute.runtime.views import JSONResponse, page, page_params, session_json
from polyroute.storage import SessionRecord

__all__ = ["create_session", "delete_session", "get_session", "list_sessions", "load_session"]


async def load_session(request: Request) -> SessionRecord:
    """The session named by the path, if it belongs to this key and to this agent; else 404."""
    agent_id = request.path_params["agent_id"]
    session_id = request.path_params["session_id"]
    session = await runtime_of(request).store.get_session(owner_of(request), agent_id, session_id)
    if session is None:
        # say which one is missing: a wrong agent id is the likelier mistake
        await load_agent(request)
        raise not_found("session", session_id)
    return session


async def create_session(request: Request) -> Response:
    runtime = runtime_of(request)
    body = validate(SessionCreate, await read_json(request, optional=True))
    agent = await load_agent(request)
    session = await runtime.store.create_session(
        owner_of(request), agent.id, user_id=body.user_id, metadata=body.metadata
    )
    return JSONResponse(
        session_json(session), status_code=201, headers={"Location": f"/agents/{agent.id}/sessions/{session.id}"}
    )


async def list_sessions(request: Request) -> Response:
    limit, cursor = page_params(request)
    agent = await load_agent(request)
    sessions = await runtime_of(request).store.list_sessions(
        owner_of(request), agent.id, user_id=request.query_params.get("userId"), limit=limit + 1, after=cursor
    )
    return JSONResponse(page([session_json(s) for s in sessions], limit, "sessionId"))


async def get_session(request: Request) -> Response:
    return JSONResponse(session_json(await load_session(request)))


async def delete_session(request: Request) -> Response:
    agent_id = request.path_params["agent_id"]
    session_id = request.path_params["session_id"]
    if not await runtime_of(request).store.delete_session(owner_of(request), agent_id, session_id):
        await load_agent(request)
        raise not_found("session", session_id)
    return Response(status_code=204)
