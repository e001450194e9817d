"""``/v1``: an OpenAI-compatible surface, so existing OpenAI clients can use the router as is.

``model`` may be any model reference (``gemini:gemini-2.0-flash``) or alias; a polyroute
extension field ``fallbacks`` adds candidates. Nothing is stored. Errors keep the runtime's
``{"error": {"code", "message", "details"}}`` shape, which the OpenAI SDKs read (they use
``error.message`` and ``error.code``).

Streaming answers with a plain HTTP error if the call fails before the first token (as
OpenAI does), and after that with an ``{"error": ...}`` data line and no ``[DONE]``, which the
SDK raises as an ``APIError`` instead of ending the stream as if it were complete.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from polyroute import errors
from polyroute.runtime.body import invalid_field, read_json, validate
from polyroute.runtime.errors import ApiError, api_error_from
from polyroute.runtime.health import provider_status
from polyroute.runtime.openai_mapping import (
    ChatCompletionBody,
    ChunkWriter,
    EmbeddingBody,
    completion_json,
    embedding_json,
    to_chat_request,
)
from polyroute.runtime.routing_headers import turn_headers
from polyroute.runtime.sse import Pump
from polyroute.runtime.state import Runtime, runtime_of
from polyroute.runtime.views import JSONResponse
from polyroute.types import ChatRequest, EmbeddingRequest, ModelSpec

__all__ = ["chat_completions", "embeddings", "get_model", "list_models"]


def _check_models(runtime: Runtime, model: str, fallbacks: list[str] | None) -> None:
    """422 naming the field when a model is neither ``provider:model`` nor a known alias."""
    specs: list[tuple[tuple[str | int, ...], ModelSpec]] = [(("model",), model)]
    specs += [(("fallbacks", i), f) for i, f in enumerate(fallbacks or ())]
    for path, spec in specs:
        try:
            runtime.router.candidates(spec)
        except (errors.ConfigError, ValueError) as exc:
            raise invalid_field(path, str(exc)) from None


async def chat_completions(request: Request) -> Response:
    runtime = runtime_of(request)
    body = validate(ChatCompletionBody, await read_json(request))
    _check_models(runtime, body.model, body.fallbacks)
    chat = to_chat_request(body)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        writer = ChunkWriter(completion_id, created, body.model, include_usage=include_usage)
        return await _stream(runtime, chat, writer)
    response = await runtime.router.chat(chat)
    return JSONResponse(
        completion_json(response, completion_id, created), headers=turn_headers(response.provider, response.attempts)
    )


async def _stream(runtime: Runtime, chat: ChatRequest, writer: ChunkWriter) -> Response:
    pump = Pump()
    answered: dict[str, str] = {}  # the x-polyroute-* headers, known at the first event

    async def produce(pump: Pump) -> None:
        started = False

        def report(api: ApiError) -> None:
            if started:
                pump.send(ChunkWriter.error(api.body()))
            else:
                pump.fail(api)

        try:
            async with aclosing(runtime.router.stream(chat)) as events:
                async for ev in events:
                    if not started:
                        started = True
                        if ev.type == "end" and ev.response is not None:
                            answered.update(turn_headers(ev.response.provider, ev.response.attempts))
                        else:
                            answered.update(
                                turn_headers(ev.provider, ev.attempts, streaming=f"{ev.provider}:{ev.model}")
                            )
                        pump.send(writer.role())
                    if ev.type == "token":
                        pump.send(writer.token(ev.delta))
                    elif ev.type == "tool_call" and ev.tool_call is not None:
                        pump.send(writer.tool_call(ev.tool_call))
                    elif ev.type == "end":
                        pump.send(writer.finish(ev.finish_reason or "stop"))
                        if writer.include_usage and ev.response is not None:
                            pump.send(writer.usage(ev.response.usage))
                        pump.send(ChunkWriter.DONE)
        except errors.PolyrouteError as exc:
            report(api_error_from(exc))
        except asyncio.CancelledError:
            if runtime.closing:
                report(ApiError(503, "server_shutting_down", "the server is shutting down; the reply was cut short"))
            raise
        except Exception:  # a bug must still end the stream the documented way (and is logged by the runtime)
            report(ApiError(500, "internal_error", "internal server error"))
            raise

    pump.start(runtime, produce)
    await pump.first()  # raises the ApiError of an early failure: a plain HTTP error response
    return pump.response(answered)


async def embeddings(request: Request) -> Response:
    runtime = runtime_of(request)
    body = validate(EmbeddingBody, await read_json(request))
    _check_models(runtime, body.model, body.fallbacks)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    response = await runtime.router.embed(
        EmbeddingRequest(model=body.model, input=inputs, fallbacks=body.fallbacks or [], dimensions=body.dimensions)
    )
    return JSONResponse(
        embedding_json(response.vectors, response.usage, f"{response.provider}:{response.model}", body.encoding_format),
        headers=turn_headers(response.provider, response.attempts),
    )


def _models(runtime: Runtime) -> list[dict[str, Any]]:
    """Aliases first, then every concrete model the aliases name, then each provider's own list."""
    router = runtime.router
    seen: dict[str, dict[str, Any]] = {}
    for alias in sorted(router.aliases):
        chain = [str(ref) for ref in router.candidates(alias)]
        seen[alias] = {"id": alias, "object": "model", "created": 0, "owned_by": "polyroute", "candidates": chain}
    for alias in sorted(router.aliases):
        for ref in router.candidates(alias):
            seen.setdefault(str(ref), {"id": str(ref), "object": "model", "created": 0, "owned_by": ref.provider})
    for name, provider in router.providers.items():
        if name in runtime.disabled:
            continue
        for model_id in getattr(provider, "models", None) or ():
            key = f"{name}:{model_id}"
            seen.setdefault(key, {"id": key, "object": "model", "created": 0, "owned_by": name})
    return list(seen.values())


async def list_models(request: Request) -> Response:
    """OpenAI's model list, plus (a polyroute extension the SDKs ignore) each provider's status."""
    runtime = runtime_of(request)
    return JSONResponse({"object": "list", "data": _models(runtime), "providers": provider_status(runtime)})


async def get_model(request: Request) -> Response:
    runtime = runtime_of(request)
    model_id = request.path_params["model"]
    for model in _models(runtime):
        if model["id"] == model_id:
            return JSONResponse(model)
    provider, sep, name = model_id.partition(":")
    if sep and name and provider in runtime.router.providers:
        return JSONResponse({"id": model_id, "object": "model", "created": 0, "owned_by": provider})
    raise ApiError(404, "model_not_found", f"model {model_id!r} is not an alias or a model of a registered provider")
