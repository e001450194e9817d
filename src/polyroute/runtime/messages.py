"""``/agents/{agentId}/sessions/{sessionId}/messages``: talk to the agent, read the history.

``POST`` answers with JSON, or with Server-Sent Events when asked (``?stream=true``, a
``"stream": true`` body field, or ``Accept: text/event-stream``); see :mod:`.turns` for what
is stored when. ``GET`` pages through the stored messages in order.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from polyroute.runtime.agents import load_agent
from polyroute.runtime.body import invalid_field, read_json, validate
from polyroute.runtime.routing_headers import turn_headers
from polyroute.runtime.schemas import MessagePost
from polyroute.runtime.sessions import load_session
from polyroute.runtime.sse import wants_stream
from polyroute.runtime.state import runtime_of
from polyroute.runtime.turns import reply_json, run_turn, stream_turn
from polyroute.runtime.views import JSONResponse, message_json, page, page_params

__all__ = ["list_messages", "post_message"]


async def post_message(request: Request) -> Response:
    runtime = runtime_of(request)
    data = await read_json(request)
    body = validate(MessagePost, data, {"max_chars": runtime.settings.max_message_chars})
    agent = await load_agent(request)
    session = await load_session(request)
    inbound = body.to_messages()
    stream = body.stream or wants_stream(request.query_params, request.headers.get("accept"))
    if stream:
        return await stream_turn(runtime, agent, session.id, inbound)
    turn = await run_turn(runtime, agent, session.id, inbound)
    reply = turn.messages[-1]
    return JSONResponse(reply_json(turn), headers=turn_headers(reply.provider, reply.attempts or ()))


async def list_messages(request: Request) -> Response:
    limit, cursor = page_params(request, default=50)
    after = 0
    if cursor is not None:
        try:
            after = int(cursor)
        except ValueError:
            raise invalid_field(
                ("query", "cursor"), "cursor must be a value returned as nextCursor", "value_error"
            ) from None
    session = await load_session(request)
    records = await runtime_of(request).store.list_messages(session.id, limit=limit + 1, after_seq=after)
    return JSONResponse(page([message_json(m) for m in records], limit, "seq"))
