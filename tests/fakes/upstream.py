"""A scriptable HTTP/1.1 server on 127.0.0.1 for provider tests.

Each test gives a handler that turns a recorded request into a :class:`Reply`: a status,
headers and a body made of byte chunks, pauses and an optional abrupt disconnect. Every
chunk is written and drained separately, so tests control exactly how a stream is split
across TCP reads. HTTP parsing is done by h11; the server runs its own event loop in a
thread so sync and async tests (and subprocesses) can all use it. While a reply is being
prepared or written the server keeps reading the socket, so it notices at once when the
client hangs up and records when on the request (:attr:`Recorded.closed_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h11
import orjson


@dataclass
class Pause:
    seconds: float


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: body pieces: bytes are written (one write + drain each), Pause sleeps
    body: list[bytes | Pause] = field(default_factory=list)
    #: stream with Transfer-Encoding: chunked (else Content-Length)
    chunked: bool = False
    #: close the socket after the body without ending the message (a dropped connection)
    disconnect: bool = False

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status=status, headers={"content-type": "application/json", **(headers or {})}, body=[orjson.dumps(data)])

    @classmethod
    def sse(cls, pieces: Iterable[bytes | str | Pause], *, status: int = 200, disconnect: bool = False,
            headers: dict[str, str] | None = None) -> Reply:
        body: list[bytes | Pause] = [p.encode() if isinstance(p, str) else p for p in pieces]
        return cls(status=status, headers={"content-type": "text/event-stream", **(headers or {})}, body=body,
                   chunked=True, disconnect=disconnect)


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    #: ``time.monotonic()`` when the client closed the connection while this request's reply
    #: was still being prepared or written (None: it did not, or not before the reply was sent)
    closed_at: float | None = None

    def json(self) -> Any:
        return orjson.loads(self.body)


Handler = Callable[[Recorded], Reply | Awaitable[Reply]]


class FakeUpstream:
    """Start with ``with FakeUpstream(handler) as up:``; ``up.url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler: Handler = handler or (lambda req: Reply(404))
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        #: TCP connections accepted (to check that clients pool them)
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeUpstream:
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        with self._lock:
            self.connections += 1
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    return
                keep = await self._respond(conn, reader, writer, request)
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Recorded | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and head is None:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode()
                path, _, query = target.partition("?")
                headers = {k.decode().lower(): v.decode() for k, v in head.headers}
                return Recorded(head.method.decode(), path, query, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    @staticmethod
    async def _watch_close(conn: h11.Connection, reader: asyncio.StreamReader, request: Recorded) -> None:
        """Read the socket while the reply is under way; stamp ``request.closed_at`` at EOF or reset.

        Bytes that arrive meanwhile (a client's next request) go to h11's buffer, exactly where
        the request loop would have put them, so nothing is lost or reordered.
        """
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                conn.receive_data(data)
        except (ConnectionError, OSError):
            pass
        request.closed_at = time.monotonic()

    async def _respond(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Recorded
    ) -> bool:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        watcher = asyncio.create_task(self._watch_close(conn, reader, request))
        try:
            reply = self.handler(request)
            if asyncio.iscoroutine(reply) or isinstance(reply, Awaitable):
                reply = await reply  # type: ignore[misc]
            assert isinstance(reply, Reply)
            headers = [(k, v) for k, v in reply.headers.items()]
            if reply.chunked:
                headers.append(("transfer-encoding", "chunked"))
            else:
                size = sum(len(p) for p in reply.body if isinstance(p, bytes))
                headers.append(("content-length", str(size)))
            writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
            await writer.drain()
            for piece in reply.body:
                if isinstance(piece, Pause):
                    await asyncio.sleep(piece.seconds)
                    continue
                if piece:
                    writer.write(conn.send(h11.Data(data=piece)))
                    await writer.drain()
            if reply.disconnect:
                return False
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return True
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            with self._lock:
                self.in_flight -= 1
