"""The endpoint table: one list drives the Starlette routes, ``/openapi.json`` and ``/docs``.

Describing each endpoint once, next to its handler, is what keeps the documentation from
drifting: an endpoint cannot be served without appearing in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polyroute.runtime import agents, health, messages, openai_compat, sessions
from polyroute.runtime.openai_mapping import ChatCompletionBody, EmbeddingBody
from polyroute.runtime.schemas import AgentCreate, AgentPatch, MessagePost, SessionCreate

__all__ = ["ENDPOINTS", "Endpoint", "Param", "routes"]

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path" or "query"
    description: str
    type: str = "string"


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    #: status -> (description, component schema name or None)
    responses: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    #: also answers with ``text/event-stream`` (documented on the 200 response)
    sse: bool = False
    public: bool = False


AGENT_ID = Param("agentId", "path", "the agent's id")
SESSION_ID = Param("sessionId", "path", "the session's id")
LIMIT = Param("limit", "query", "page size (1..maxPageSize)", "integer")
CURSOR = Param("cursor", "query", "the nextCursor of the previous page")

AGENT = "/agents/{agentId}"
SESSION = "/agents/{agentId}/sessions/{sessionId}"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/health",
        health.health,
        "Liveness: the process is up",
        "health",
        responses={200: ("alive", "Health")},
        public=True,
    ),
    Endpoint(
        "GET",
        "/ready",
        health.ready,
        "Readiness: database and each provider's status",
        "health",
        responses={200: ("ready", "Ready"), 503: ("not ready", "Ready")},
    ),
    Endpoint(
        "POST",
        "/agents",
        agents.create_agent,
        "Create an agent",
        "agents",
        AgentCreate,
        {201: ("the stored agent", "Agent")},
    ),
    Endpoint(
        "GET",
        "/agents",
        agents.list_agents,
        "List this key's agents",
        "agents",
        responses={200: ("a page of agents", "AgentPage")},
        params=(LIMIT, CURSOR),
    ),
    Endpoint(
        "GET",
        AGENT,
        agents.get_agent,
        "Read an agent",
        "agents",
        responses={200: ("the agent", "Agent")},
        params=(AGENT_ID,),
    ),
    Endpoint(
        "PATCH",
        AGENT,
        agents.update_agent,
        "Change an agent (config keys are merged)",
        "agents",
        AgentPatch,
        {200: ("the updated agent", "Agent")},
        (AGENT_ID,),
    ),
    Endpoint(
        "DELETE",
        AGENT,
        agents.delete_agent,
        "Delete an agent, its sessions and messages",
        "agents",
        responses={204: ("deleted", None)},
        params=(AGENT_ID,),
    ),
    Endpoint(
        "POST",
        f"{AGENT}/sessions",
        sessions.create_session,
        "Start a session with an agent",
        "sessions",
        SessionCreate,
        {201: ("the new session", "Session")},
        (AGENT_ID,),
    ),
    Endpoint(
        "GET",
        f"{AGENT}/sessions",
        sessions.list_sessions,
        "List an agent's sessions",
        "sessions",
        responses={200: ("a page of sessions", "SessionPage")},
        params=(AGENT_ID, Param("userId", "query", "only this user's sessions"), LIMIT, CURSOR),
    ),
    Endpoint(
        "GET",
        SESSION,
        sessions.get_session,
        "Read a session",
        "sessions",
        responses={200: ("the session", "Session")},
        params=(AGENT_ID, SESSION_ID),
    ),
    Endpoint(
        "DELETE",
        SESSION,
        sessions.delete_session,
        "Delete a session and its messages",
        "sessions",
        responses={204: ("deleted", None)},
        params=(AGENT_ID, SESSION_ID),
    ),
    Endpoint(
        "POST",
        f"{SESSION}/messages",
        messages.post_message,
        "Send a message and get the agent's reply (SSE with ?stream=true or Accept: text/event-stream)",
        "messages",
        MessagePost,
        {200: ("the stored reply", "Reply")},
        (AGENT_ID, SESSION_ID, Param("stream", "query", "answer with Server-Sent Events", "boolean")),
        sse=True,
    ),
    Endpoint(
        "GET",
        f"{SESSION}/messages",
        messages.list_messages,
        "List a session's messages in order",
        "messages",
        responses={200: ("a page of messages", "MessagePage")},
        params=(AGENT_ID, SESSION_ID, LIMIT, CURSOR),
    ),
    Endpoint(
        "POST",
        "/v1/chat/completions",
        openai_compat.chat_completions,
        "OpenAI-compatible chat completion",
        "openai",
        ChatCompletionBody,
        {200: ("an OpenAI chat.completion", "ChatCompletion")},
        sse=True,
    ),
    Endpoint(
        "POST",
        "/v1/embeddings",
        openai_compat.embeddings,
        "OpenAI-compatible embeddings",
        "openai",
        EmbeddingBody,
        {200: ("an OpenAI embedding list", "EmbeddingList")},
    ),
    Endpoint(
        "GET",
        "/v1/models",
        openai_compat.list_models,
        "Aliases and models this server can route to",
        "openai",
        responses={200: ("an OpenAI model list", "ModelList")},
    ),
    Endpoint(
        "GET",
        "/v1/router/health",
        health.router_health,
        "Each deployment's circuit state, recent error rate, latency and in-flight count",
        "health",
        responses={200: ("the router's health snapshot", "RouterHealth")},
    ),
    Endpoint(
        "GET",
        "/v1/models/{model}",
        openai_compat.get_model,
        "One model or alias",
        "openai",
        responses={200: ("an OpenAI model", "Model")},
        params=(Param("model", "path", "an alias or provider:model"),),
    ),
)


def _starlette_path(path: str) -> str:
    return path.replace("{agentId}", "{agent_id}").replace("{sessionId}", "{session_id}")


def routes() -> list[Route]:
    """Starlette routes for :data:`ENDPOINTS`, one :class:`Route` per path with all its methods."""
    by_path: dict[str, dict[str, Handler]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = ep.handler
    out = []
    for path, handlers in by_path.items():
        out.append(Route(_starlette_path(path), _dispatch(handlers), methods=list(handlers)))
    return out


def _dispatch(handlers: dict[str, Handler]) -> Handler:
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def endpoint(request: Request) -> Response:
        # Starlette adds HEAD to every GET route; it is served by the GET handler
        handler = handlers.get(request.method) or handlers["GET"]
        return await handler(request)

    return endpoint
