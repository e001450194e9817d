"""A fast fake OpenAI-compatible upstream for benchmarks: ``python -m bench.upstream --port N``.

It runs in its own process (so it never shares a GIL with the system under test) on a raw
asyncio protocol with httptools parsing and uvloop when available: there is no framework
between the socket and the canned answer, so it is not the bottleneck of any measurement.
``bench`` measures its capacity with the same load generator and reports it next to the
results, so a reader can check that claim.

The answer's shape is chosen by the model name, which every system under test passes
through untouched: ``bench-t<tokens>-d<delay_ms>`` (for example ``bench-t16-d0``) answers
with ``tokens`` content tokens and, when streaming, sleeps ``delay_ms`` between them. Any
other model name gets the ``--tokens`` / ``--delay-ms`` defaults.

Wire format as the Chat Completions docs describe it: a ``chat.completion`` JSON body, or
(``"stream": true``) ``text/event-stream`` with one ``chat.completion.chunk`` per event, a
role chunk first, a finish chunk, a usage chunk with empty ``choices`` when
``stream_options.include_usage`` is set, and ``data: [DONE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
from functools import lru_cache
from typing import Any, cast

import httptools
import orjson

_MODEL = re.compile(r"bench-t(\d+)-d(\d+(?:\.\d+)?)")
_WORDS = ("Hello", " there", ",", " this", " is", " a", " fake", " token", " stream", " from", " the", " bench")

_HEAD_JSON = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
_HEAD_SSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n%s\r\n"
)
_KEEP = b"connection: keep-alive\r\n"
_CLOSE = b"connection: close\r\n"
_MODELS_BODY = orjson.dumps(
    {"object": "list", "data": [{"id": "bench-t16-d0", "object": "model", "owned_by": "bench"}]}
)

DEFAULT_TOKENS = 16
DEFAULT_DELAY_MS = 0.0

#: connections accepted and requests answered since start, served at ``GET /stats`` so a
#: benchmark can tell whether a client reuses its connections
STATS = {"connections": 0, "requests": 0}


def shape(model: str) -> tuple[int, float]:
    """(tokens, delay in seconds) for a model name; see the module docstring."""
    match = _MODEL.search(model)
    if match is None:
        return DEFAULT_TOKENS, DEFAULT_DELAY_MS / 1000
    return int(match.group(1)), float(match.group(2)) / 1000


def _token(i: int) -> str:
    return _WORDS[i % len(_WORDS)]


def _usage(tokens: int, prompt_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}


@lru_cache(maxsize=256)
def completion_body(model: str, prompt_tokens: int) -> bytes:
    tokens, _ = shape(model)
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(_token(i) for i in range(tokens))},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(tokens, prompt_tokens),
        }
    )


def _chunked(event: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    return b"%x\r\n%s\r\n" % (len(event), event)


@lru_cache(maxsize=256)
def stream_events(model: str, prompt_tokens: int, include_usage: bool) -> tuple[bytes, ...]:
    """Every HTTP chunk of a streamed answer, in order, ending with the zero-length chunk."""
    tokens, _ = shape(model)
    base: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
    }

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return _chunked(b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n")

    out = [
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
    ]
    out += [
        event([{"index": 0, "delta": {"content": _token(i)}, "logprobs": None, "finish_reason": None}])
        for i in range(tokens)
    ]
    out.append(event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    if include_usage:
        out.append(event([], usage=_usage(tokens, prompt_tokens)))
    out.append(_chunked(b"data: [DONE]\n\n"))
    out.append(b"0\r\n\r\n")
    return tuple(out)


def _prompt_tokens(messages: Any) -> int:
    """A cheap stand-in for a tokenizer: whitespace-separated words in the messages."""
    if not isinstance(messages, list):
        return 0
    count = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            count += content.count(" ") + 1
    return count


class UpstreamProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each in order (keep-alive)."""

    __slots__ = ("_body", "_busy", "_parser", "_url", "transport")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body: list[bytes] = []
        self._busy: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        STATS["connections"] += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        STATS["requests"] += 1
        keep = self._parser.should_keep_alive()
        conn = _KEEP if keep else _CLOSE
        path = self._url.split(b"?", 1)[0]
        method = self._parser.get_method()
        if method == b"POST" and path.endswith(b"/chat/completions"):
            self._chat(b"".join(self._body), conn, keep)
        elif method == b"GET" and path.endswith(b"/models"):
            self._send(_HEAD_JSON % (len(_MODELS_BODY), conn) + _MODELS_BODY, keep)
        elif method == b"GET" and path.endswith(b"/stats"):
            body = orjson.dumps(STATS)
            self._send(_HEAD_JSON % (len(body), conn) + body, keep)
        elif method == b"GET" and path in (b"/health", b"/"):
            self._send(_HEAD_JSON % (2, conn) + b"{}", keep)
        else:
            body = b'{"error":{"message":"not found","type":"invalid_request_error","code":null}}'
            head = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
            self._send(head % (len(body), conn) + body, keep)

    # answers
    def _send(self, data: bytes, keep: bool) -> None:
        if self._busy is not None and not self._busy.done():
            # a pipelined request while a slow stream is still being written: answer in order
            busy = self._busy
            self._busy = asyncio.ensure_future(self._after(busy, [data], 0.0, keep))
            return
        if self.transport is not None:
            self.transport.write(data)
            if not keep:
                self.transport.close()

    async def _after(self, busy: asyncio.Future[None], parts: list[bytes], delay: float, keep: bool) -> None:
        await busy
        await self._write_paced(parts, delay, keep)

    async def _write_paced(self, parts: list[bytes], delay: float, keep: bool) -> None:
        for i, part in enumerate(parts):
            if self.transport is None or self.transport.is_closing():
                return
            if i and delay:
                await asyncio.sleep(delay)
                if self.transport is None:
                    return
            self.transport.write(part)
        if not keep and self.transport is not None:
            self.transport.close()

    def _chat(self, raw: bytes, conn: bytes, keep: bool) -> None:
        try:
            request = orjson.loads(raw)
            model = str(request["model"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            body = b'{"error":{"message":"invalid JSON body","type":"invalid_request_error","code":null}}'
            head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
            self._send(head % (len(body), conn) + body, keep)
            return
        prompt = _prompt_tokens(request.get("messages"))
        if not request.get("stream"):
            body = completion_body(model, prompt)
            self._send(_HEAD_JSON % (len(body), conn) + body, keep)
            return
        options = request.get("stream_options")
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        events = stream_events(model, prompt, include_usage)
        _, delay = shape(model)
        head = _HEAD_SSE % conn
        if not delay:
            self._send(head + b"".join(events), keep)
            return
        # one write per content token, paced; role chunk rides with the first token and the
        # finish, usage and [DONE] chunks with the last, so the answer takes (tokens - 1) * delay
        tokens = len(events) - (5 if include_usage else 4)
        if tokens < 2:
            self._send(head + b"".join(events), keep)
            return
        parts = [head + events[0] + events[1], *events[2:tokens], b"".join(events[tokens:])]
        if self._busy is not None and not self._busy.done():
            self._busy = asyncio.ensure_future(self._after(self._busy, parts, delay, keep))
        else:
            self._busy = asyncio.ensure_future(self._write_paced(parts, delay, keep))


async def serve(host: str, port: int, ready: str | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"upstream listening on http://{host}:{bound}", flush=True)
    if ready:
        with open(ready, "w") as fh:
            fh.write(str(bound))
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    global DEFAULT_TOKENS, DEFAULT_DELAY_MS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed, and written to --ready)")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS)
    parser.add_argument("--delay-ms", type=float, default=DEFAULT_DELAY_MS)
    parser.add_argument("--ready", help="write the bound port to this file once listening")
    args = parser.parse_args(argv)
    DEFAULT_TOKENS, DEFAULT_DELAY_MS = args.tokens, args.delay_ms
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port, args.ready))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
