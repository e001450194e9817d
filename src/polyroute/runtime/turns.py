"""One turn of a session: append the user's message, call the model, store the reply.

Order of operations, and why:

1. take the session's turn lock (:mod:`polyroute.storage.locks`), so turns never overlap;
2. read the history in a short transaction, then release the connection;
3. call the router with no transaction open (a model call can take a minute);
4. write the user message(s) *and* the reply in one transaction (:meth:`Store.record_turn`).

So a reply is stored complete or not at all. A failed call stores the user message with
status ``error`` and the error, and sets the session state to ``error``; the next message is
accepted as usual (failed messages are left out of later history). A stream that is cut
short stores what arrived, as an ``incomplete`` reply with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

from starlette.responses import StreamingResponse

from polyroute import errors
from polyroute.runtime.errors import ApiError, api_error_from, storage_api_error
from polyroute.runtime.history import build_context, chat_request
from polyroute.runtime.routing_headers import turn_headers
from polyroute.runtime.sse import Pump, event
from polyroute.runtime.state import Runtime
from polyroute.runtime.views import message_json
from polyroute.storage import AgentRecord, NewMessage, StorageError, Turn
from polyroute.storage.records import SessionState
from polyroute.storage.schema import new_id
from polyroute.types import Attempt, ChatRequest, ChatResponse, Message, ToolCall

__all__ = ["reply_json", "run_turn", "stream_turn"]

logger = logging.getLogger("polyroute.runtime")


async def _prepare(runtime: Runtime, agent: AgentRecord, session_id: str, inbound: Sequence[Message]) -> ChatRequest:
    settings = runtime.settings
    history = await runtime.store.history(session_id, limit=settings.max_history_messages)
    window = agent.config.get("historyTokenWindow") or settings.default_history_token_window
    messages = build_context(history, inbound, system_prompt=agent.config.get("systemPrompt"), window=window)
    return chat_request(agent, messages, session_id=session_id)


def _user_rows(inbound: Sequence[Message], *, error: dict[str, Any] | None = None) -> list[NewMessage]:
    rows = []
    for msg in inbound:
        content = (
            msg.content
            if msg.content is None or isinstance(msg.content, str)
            else [p.model_dump(by_alias=True, exclude_none=True) for p in msg.content]
        )
        rows.append(
            NewMessage(
                role=msg.role,
                content=content,
                name=msg.name,
                tool_call_id=msg.tool_call_id,
                status="error" if error else "complete",
                error=error,
            )
        )
    return rows


def _calls(tool_calls: Sequence[ToolCall] | None) -> list[dict[str, Any]] | None:
    return [c.model_dump(by_alias=True) for c in tool_calls] if tool_calls else None


def _reply_row(response: ChatResponse) -> NewMessage:
    return NewMessage(
        role="assistant",
        content=response.message.text or None,
        tool_calls=_calls(response.message.tool_calls),
        finish_reason=response.finish_reason,
        usage=response.usage.model_dump(by_alias=True),
        provider=response.provider,
        model=response.model,
        attempts=[a.to_dict() for a in response.attempts],
    )


def reply_json(turn: Turn) -> dict[str, Any]:
    """The POST response: the stored reply, plus the session's state and the user message ids."""
    *users, reply = turn.messages
    assert turn.session is not None
    return {
        **message_json(reply),
        "state": turn.session.state,
        "userMessageIds": [m.id for m in users],
    }


async def _persist(
    runtime: Runtime, session_id: str, rows: list[NewMessage], *, state: SessionState, error: dict[str, Any] | None
) -> Turn:
    """Store a turn even if the request is cancelled meanwhile (a client leaving at the last moment).

    The write runs as its own tracked task behind :func:`asyncio.shield`; if the caller is
    cancelled it still waits for the write, so the session lock is not released before the
    turn is on disk (the next turn must see it in its history).
    """
    task = runtime.spawn(runtime.store.record_turn(session_id, rows, state=state, last_error=error))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def _record_failure(runtime: Runtime, session_id: str, inbound: Sequence[Message], api: ApiError) -> None:
    body = api.body()["error"]
    turn = await _persist(runtime, session_id, _user_rows(inbound, error=body), state="error", error=body)
    api.details["sessionState"] = "error"
    api.details["userMessageIds"] = [m.id for m in turn.messages]


async def run_turn(runtime: Runtime, agent: AgentRecord, session_id: str, inbound: Sequence[Message]) -> Turn:
    """A non-streaming turn; raises :class:`ApiError` (after storing the failure) when the call fails."""
    async with runtime.locks.hold(session_id):
        request = await _prepare(runtime, agent, session_id, inbound)
        try:
            response = await runtime.router.chat(request)
        except errors.PolyrouteError as exc:
            api = api_error_from(exc)
            await _record_failure(runtime, session_id, inbound, api)
            raise api from None
        return await _persist(
            runtime, session_id, [*_user_rows(inbound), _reply_row(response)], state="active", error=None
        )


async def stream_turn(
    runtime: Runtime, agent: AgentRecord, session_id: str, inbound: Sequence[Message]
) -> StreamingResponse:
    """Run a streaming turn; the response's body is the SSE stream.

    Events: ``token`` (``{"delta"}``) per text delta, ``toolCall`` per complete tool call, then
    either ``end`` (the stored reply, as the non-streaming POST returns it) or ``error``
    (``{"error": {...}, "status"}``). The response starts with the first event, so its
    ``x-polyroute-*`` headers can name the candidate streaming and those tried before it.
    """
    pump = Pump()
    headers: dict[str, str] = {}

    async def produce(pump: Pump) -> None:
        try:
            async with runtime.locks.hold(session_id):
                request = await _prepare(runtime, agent, session_id, inbound)
                await _stream(runtime, pump, session_id, inbound, request, headers)
        except StorageError as exc:
            api = storage_api_error(exc)
            pump.send(event("error", {**api.body(), "status": api.status}))
        except Exception as exc:
            logger.error("stream turn failed: %s", type(exc).__name__, exc_info=exc if runtime.settings.debug else None)
            pump.send(
                event("error", {**ApiError(500, "internal_error", "internal server error").body(), "status": 500})
            )

    pump.start(runtime, produce)
    await pump.first()
    return pump.response(headers)


async def _stream(
    runtime: Runtime,
    pump: Pump,
    session_id: str,
    inbound: Sequence[Message],
    request: ChatRequest,
    headers: dict[str, str],
) -> None:
    """Relay the router's stream as SSE and store the turn; fills ``headers`` before the first event."""
    text: list[str] = []
    calls: list[ToolCall] = []
    response: ChatResponse | None = None
    failure: ApiError | None = None
    tried: list[Attempt] = []
    try:
        async with aclosing(runtime.router.stream(request)) as events:
            async for ev in events:
                if not headers and ev.type != "end":
                    headers.update(turn_headers(ev.provider, ev.attempts, streaming=f"{ev.provider}:{ev.model}"))
                if ev.type == "token":
                    text.append(ev.delta)
                    pump.send(event("token", {"delta": ev.delta}))
                elif ev.type == "tool_call" and ev.tool_call is not None:
                    calls.append(ev.tool_call)
                    pump.send(event("toolCall", ev.tool_call.model_dump(by_alias=True)))
                elif ev.type == "end":
                    response = ev.response
    except errors.PolyrouteError as exc:
        failure = api_error_from(exc)
        tried = exc.attempts
    except asyncio.CancelledError:
        # Swallowed on purpose: this task was cancelled to stop the model call, and still has
        # to store what arrived. uncancel() keeps later awaits in this task unaffected.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if runtime.closing:
            failure = ApiError(503, "server_shutting_down", "the server is shutting down; the reply was cut short")
        else:
            failure = ApiError(499, "client_disconnected", "the client disconnected; the reply was cut short")

    if response is not None:
        turn = await _persist(
            runtime, session_id, [*_user_rows(inbound), _reply_row(response)], state="active", error=None
        )
        if not headers:  # the reply came in one piece: its attempts are complete
            headers.update(turn_headers(response.provider, response.attempts))
        pump.send(event("end", reply_json(turn)))
        return
    assert failure is not None
    if not headers:
        headers.update(turn_headers(None, tried))
    body = failure.body()["error"]
    if text or calls:
        # the candidate that broke off: who wrote the partial reply, and what it cost
        broke = next((a for a in reversed(tried) if a.outcome == "error"), None)
        partial = NewMessage(
            id=new_id("msg"),
            role="assistant",
            content="".join(text) or None,
            tool_calls=_calls(calls),
            finish_reason="error",
            usage=broke.usage.model_dump(by_alias=True) if broke is not None and broke.usage is not None else None,
            provider=broke.provider if broke is not None else None,
            model=broke.model if broke is not None else None,
            attempts=[a.to_dict() for a in tried] or None,
            status="incomplete",
            error=body,
        )
        turn = await _persist(runtime, session_id, [*_user_rows(inbound), partial], state="error", error=body)
        failure.details["incompleteMessageId"] = partial.id
        failure.details["userMessageIds"] = [m.id for m in turn.messages[:-1]]
        failure.details["sessionState"] = "error"
    else:
        await _record_failure(runtime, session_id, inbound, failure)
    pump.send(event("error", {**failure.body(), "status": failure.status}))
