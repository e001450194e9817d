"""``/openapi.json`` and ``/docs``, both built from the endpoint table in :mod:`.routes`.

Request bodies are described by their pydantic models (so the schema is exactly what is
validated); responses by the hand-written schemas below, which the tests check real
responses against. ``/docs`` is rendered on the server as plain HTML: it is useful with no
JavaScript and no CDN.
"""

from __future__ import annotations

import html
from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from polyroute import __version__
from polyroute.runtime.routes import ENDPOINTS, Endpoint
from polyroute.runtime.schemas import AgentConfig
from polyroute.runtime.views import JSONResponse
from polyroute.types import ModelRef, Tool

__all__ = ["docs_page", "openapi_document", "openapi_json"]

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required or list(props),
        "additionalProperties": False,
        **extra,
    }


_S = {"type": "string"}
_S_NULL = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_TIME = {"type": "string", "format": "date-time"}
_ANY_OBJ = {"type": "object", "additionalProperties": True}
_NULL_OBJ = {"type": ["object", "null"], "additionalProperties": True}


def _open(props: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object whose listed fields (but ``optional``) are always present; more may be added without notice."""
    required = [name for name in props if name not in optional]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": True}


def _page(item: str) -> dict[str, Any]:
    return _obj({"data": {"type": "array", "items": _ref(item)}, "nextCursor": _S_NULL, "hasMore": {"type": "boolean"}})


_MESSAGE_PROPS: dict[str, Any] = {
    "messageId": _S,
    "sessionId": _S,
    "seq": _INT,
    "role": {"enum": ["system", "user", "assistant", "tool"]},
    "content": {"oneOf": [_S, {"type": "array", "items": _ANY_OBJ}, {"type": "null"}]},
    "name": _S_NULL,
    "toolCalls": {"type": ["array", "null"], "items": _ANY_OBJ},
    "toolCallId": _S_NULL,
    "finishReason": _S_NULL,
    "usage": {"oneOf": [_ref("UsageOut"), {"type": "null"}]},
    # usage summed over every attempt a provider billed (hedge losers, a stream cut short)
    "totalUsage": {"oneOf": [_ref("UsageOut"), {"type": "null"}]},
    "provider": _S_NULL,
    "model": _S_NULL,
    "attempts": {"type": ["array", "null"], "items": _ref("AttemptOut")},
    "status": {"enum": ["complete", "incomplete", "error"]},
    "error": _NULL_OBJ,
    "createdAt": _TIME,
}

RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _obj({"error": _obj({"code": _S, "message": _S, "details": _ANY_OBJ})}),
    "Health": _obj({"status": {"const": "ok"}}),
    "ProviderStatus": {
        "type": "object",
        "additionalProperties": _obj(
            {
                "status": {"enum": ["available", "not_configured", "disabled"]},
                "missingEnvVar": _S,
                "capabilities": {"type": "object", "additionalProperties": {"type": "boolean"}},
            },
            ["status"],
        ),
    },
    "Ready": _obj(
        {
            "status": {"enum": ["ready", "not_ready"]},
            "database": _obj({"backend": _S, "status": {"enum": ["ok", "unavailable"]}}),
            "providers": _ref("ProviderStatus"),
        }
    ),
    "Agent": _obj(
        {
            "agentId": _S,
            "name": _S,
            "description": _S_NULL,
            "model": {"oneOf": [_S, _ref("ModelRef")]},
            "tools": {"type": "array", "items": _ref("Tool")},
            "config": _ref("AgentConfig"),
            "createdAt": _TIME,
            "updatedAt": _TIME,
        }
    ),
    "AgentPage": _page("Agent"),
    "Session": _obj(
        {
            "sessionId": _S,
            "agentId": _S,
            "userId": _S_NULL,
            "metadata": _ANY_OBJ,
            "state": {"enum": ["active", "error"]},
            "messageCount": _INT,
            "lastError": _NULL_OBJ,
            "createdAt": _TIME,
            "updatedAt": _TIME,
        }
    ),
    "SessionPage": _page("Session"),
    "UsageOut": _obj(
        {k: _INT for k in ("promptTokens", "completionTokens", "totalTokens", "cachedTokens", "reasoningTokens")}
    ),
    "AttemptOut": _open(
        {
            "provider": _S,
            "model": _S,
            "outcome": {"enum": ["ok", "error", "skipped", "cancelled", "resumed"]},
            "elapsedMs": {"type": "number"},
            "error": _S_NULL,
            "status": {"type": ["integer", "null"]},
            "message": _S_NULL,
            "retry": _INT,
            "waitedMs": {"type": "number"},
            "note": _S_NULL,
            "usage": {"oneOf": [_ref("UsageOut"), {"type": "null"}]},
            "usageEstimated": {"type": "boolean"},
        },
        optional=("usageEstimated",),  # replies stored before it existed lack it
    ),
    "RouterHealth": _open(
        {
            "healthy": {"type": "boolean"},
            "inFlight": _INT,
            "maxConcurrency": _INT,
            "waiting": _INT,
            "deployments": {
                "type": "array",
                "items": _open(
                    {
                        "provider": _S,
                        "model": _S,
                        "state": {"enum": ["closed", "open", "half_open", "auth_failed"]},
                        "errorRate": {"type": "number"},
                        "inFlight": _INT,
                        "remoteState": {"enum": ["open", "half_open", "auth_failed", None]},
                    }
                ),
            },
        }
    ),
    "Message": _obj(_MESSAGE_PROPS),
    "MessagePage": _page("Message"),
    "Reply": _obj(
        {**_MESSAGE_PROPS, "state": {"enum": ["active", "error"]}, "userMessageIds": {"type": "array", "items": _S}}
    ),
    "ChatCompletion": _obj(
        {
            "id": _S,
            "object": {"const": "chat.completion"},
            "created": _INT,
            "model": _S,
            "choices": {"type": "array", "items": _ANY_OBJ},
            "usage": _ANY_OBJ,
        },
        ["id", "object", "created", "model", "choices"],
        additionalProperties=True,
    ),
    "EmbeddingList": _obj(
        {"object": {"const": "list"}, "data": {"type": "array", "items": _ANY_OBJ}, "model": _S, "usage": _ANY_OBJ}
    ),
    "Model": _obj(
        {"id": _S, "object": {"const": "model"}, "created": _INT, "owned_by": _S},
        ["id", "object", "owned_by"],
        additionalProperties=True,
    ),
    "ModelList": _obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Model")},
            "providers": _ref("ProviderStatus"),
        },
        ["object", "data"],
    ),
}

_SSE_DOC = (
    'With `?stream=true`, a `"stream": true` body field or `Accept: text/event-stream`, the answer is '
    'Server-Sent Events: `token` (`{"delta"}`) per text delta, `toolCall` per tool call, then `end` '
    '(the stored reply, as in the JSON answer) or `error` (`{"error": {...}, "status"}`).'
)
_V1_SSE_DOC = (
    'With `"stream": true`: `data:` lines of `chat.completion.chunk` objects, a usage chunk when '
    "`stream_options.include_usage` is set, then `data: [DONE]`."
)


def _error_statuses(ep: Endpoint) -> list[int]:
    statuses = [500]
    if not ep.public:
        statuses.append(401)
    if any(p.where == "path" for p in ep.params):
        statuses.append(404)
    if ep.body is not None:
        statuses += [400, 413, 422]
    elif any(p.where == "query" for p in ep.params):
        statuses.append(422)
    if ep.tag in ("messages", "openai") and ep.method == "POST":
        statuses += [429, 502, 503, 504]
    if ep.tag == "messages" and ep.method == "POST":
        statuses.append(409)
    return sorted(set(statuses))


def _operation(ep: Endpoint) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (summary, schema) in ep.responses.items():
        description = summary
        content: dict[str, Any] = {"application/json": {"schema": _ref(schema)}} if schema else {}
        if ep.sse and status == 200:
            content["text/event-stream"] = {"schema": {"type": "string"}}
            description = f"{description}. {_V1_SSE_DOC if ep.tag == 'openai' else _SSE_DOC}"
        responses[str(status)] = {"description": description, **({"content": content} if content else {})}
    for status in _error_statuses(ep):
        responses.setdefault(
            str(status), {"description": "error", "content": {"application/json": {"schema": _ref("Error")}}}
        )
    op: dict[str, Any] = {
        "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
        "summary": ep.summary,
        "tags": [ep.tag],
        "responses": responses,
    }
    if ep.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path",
                "description": p.description,
                "schema": {"type": p.type},
            }
            for p in ep.params
        ]
    if ep.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(ep.body.__name__)}}}
    if ep.public:
        op["security"] = []
    return op


@cache
def openapi_document() -> dict[str, Any]:
    bodies = {ep.body for ep in ENDPOINTS if ep.body is not None}
    models = [(m, "validation") for m in sorted(bodies | {ModelRef, Tool, AgentConfig}, key=lambda m: m.__name__)]
    _, defs = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    schemas = {**defs.get("$defs", {}), **RESPONSE_SCHEMAS}
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    paths["/openapi.json"] = {
        "get": {
            "operationId": "get_openapi",
            "summary": "This document",
            "tags": ["meta"],
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    }
    paths["/docs"] = {
        "get": {
            "operationId": "get_docs",
            "summary": "Human-readable API overview",
            "tags": ["meta"],
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "polyroute",
            "version": __version__,
            "description": "Agents, sessions and messages over many LLM providers, plus an OpenAI-compatible /v1.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())


@cache
def _docs_html() -> str:
    """The endpoint table, rendered from the OpenAPI document itself so the two always agree."""
    rows = []
    for path, item in openapi_document()["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            body_name = body.get("$ref", "").rsplit("/", 1)[-1]
            ok = ", ".join(s for s in op["responses"] if s.startswith("2"))
            rows.append(
                f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{html.escape(body_name)}</td><td>{ok}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>polyroute API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}"
        "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;"
        "text-align:left;vertical-align:top}code{background:#f4f4f4;padding:0 .2rem}</style></head><body>"
        f"<h1>polyroute API <small>{__version__}</small></h1>"
        "<p>The machine-readable description is <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1). "
        "Send the API key as <code>Authorization: Bearer &lt;key&gt;</code> or <code>X-API-Key</code>. "
        'Errors are <code>{"error": {"code", "message", "details"}}</code>.</p>'
        f"<p>{html.escape(_SSE_DOC)}</p>"
        "<table><tr><th>method</th><th>path</th><th>what</th><th>body</th><th>success</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


async def docs_page(request: Request) -> Response:
    return HTMLResponse(_docs_html())
