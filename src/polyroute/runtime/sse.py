"""Server-Sent Events out: encoding, and the producer/consumer split behind every stream.

A streamed reply is produced by a :class:`Pump`: the model call runs in its *own* task and
hands encoded chunks to the response body through a queue. Keeping the call out of the
response task is what makes endings clean:

- when the client disconnects, Starlette cancels the response task; the pump then cancels
  the producer, which still gets to store the partial reply (marked incomplete) because it
  is a separate task with ordinary, edge-triggered cancellation;
- on shutdown the runtime cancels every producer; each sends a final ``error`` event, stores
  what it has, and the body ends.

The producer is tracked by the runtime, so shutdown waits for its last database write
before the engine is disposed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import StreamingResponse

if TYPE_CHECKING:
    from polyroute.runtime.errors import ApiError
    from polyroute.runtime.state import Runtime

__all__ = ["SSE_HEADERS", "Pump", "event", "wants_stream"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def event(name: str, data: Any) -> bytes:
    """One named event; ``data`` is JSON (orjson never emits a newline, so one data line)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def wants_stream(query: Mapping[str, str], accept: str | None) -> bool:
    flag = query.get("stream")
    if flag is not None:
        return flag.lower() in ("1", "true", "yes", "on")
    return accept is not None and "text/event-stream" in accept


class Pump:
    """Runs ``producer(pump)`` in a runtime-tracked task and streams what it sends."""

    __slots__ = ("_first", "_queue", "task")

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    def start(self, runtime: Runtime, producer: Callable[[Pump], Coroutine[Any, Any, None]]) -> None:
        task = runtime.spawn(producer(self), stream=True)
        # A done callback fires even when the task was cancelled before it ever ran.
        task.add_done_callback(self._finished)
        self.task = task

    def _finished(self, _task: asyncio.Task[None]) -> None:
        self._queue.put_nowait(None)
        if not self._first.done():
            self._first.set_result(None)

    def send(self, chunk: bytes) -> None:
        self._queue.put_nowait(chunk)
        if not self._first.done():
            self._first.set_result(None)

    def fail(self, error: ApiError) -> None:
        """Report an error before anything was sent, so the caller can answer with a plain HTTP error."""
        if not self._first.done():
            self._first.set_exception(error)

    async def first(self) -> None:
        """Wait until the producer sent something, finished, or failed early (raises its ApiError)."""
        await self._first

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._queue.get()) is not None:
                yield chunk
        finally:
            if self.task is not None and not self.task.done():
                self.task.cancel()  # the client went away: stop the model call

    def response(self, headers: Mapping[str, str] | None = None) -> StreamingResponse:
        return StreamingResponse(
            self.body(), media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
        )
