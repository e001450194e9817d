"""AWS Bedrock's Converse API for :class:`fakes.upstream.FakeUpstream`, signature checks included.

Builders return the JSON shapes AWS documents for ``Converse`` (``output.message.content``,
``stopReason``, ``usage``, ``metrics``) and *encode* ``ConverseStream``'s binary
``application/vnd.amazon.eventstream`` frames by hand (prelude with total and headers length,
prelude CRC32, typed string headers, JSON payload, message CRC32), so the client's decoder is
tested against real bytes. Event payloads carry the ``"p"`` padding field AWS adds to them.

:class:`BedrockFake` routes ``POST /model/<id>/converse`` and ``/converse-stream``, checks the
``Authorization`` header's SigV4 shape and recomputes its signature from the request it
actually received (so a body or path changed after signing is caught), and answers like
Bedrock: errors are ``{"message"}`` with the type in ``x-amzn-errortype``.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote

import orjson

from fakes.upstream import Pause, Recorded, Reply

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "BedrockFake",
    "content_block_start",
    "content_block_stop",
    "converse_response",
    "error_reply",
    "event",
    "exception",
    "frame",
    "message_start",
    "message_stop",
    "metadata",
    "split",
    "stream_reply",
    "text_delta",
    "text_events",
    "tool_use_events",
    "usage",
]

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGH"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"


# --------------------------------------------------------------------------- whole replies


def usage(inputs: int = 12, outputs: int = 7, *, cache_read: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"inputTokens": inputs, "outputTokens": outputs, "totalTokens": inputs + outputs}
    if cache_read is not None:
        out["cacheReadInputTokens"] = cache_read
        out["cacheWriteInputTokens"] = 0
        out["totalTokens"] += cache_read
    return out


def converse_response(
    content: Sequence[dict[str, Any] | str] = ("Hello from Bedrock.",),
    *,
    stop_reason: str = "end_turn",
    usage_counts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``Converse`` answer; strings become text blocks."""
    blocks = [{"text": c} if isinstance(c, str) else c for c in content]
    return {
        "output": {"message": {"role": "assistant", "content": blocks}},
        "stopReason": stop_reason,
        "usage": usage_counts if usage_counts is not None else usage(),
        "metrics": {"latencyMs": 412},
    }


def error_reply(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    head = {"x-amzn-errortype": f"{error_type}:{_ERROR_NAMESPACE}", "x-amzn-requestid": "req-0001", **(headers or {})}
    return Reply.json({"message": message}, status=status, headers=head)


# --------------------------------------------------------------------------- event-stream framing


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + b"\x07" + struct.pack("!H", len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude, prelude CRC32, headers, payload, message CRC32."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack("!I", zlib.crc32(body))


def event(kind: str, data: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, orjson.dumps({**data, "p": _PADDING[: 1 + len(kind) % 20]}))


def exception(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, orjson.dumps({"message": message}))


def message_start() -> bytes:
    return event("messageStart", {"role": "assistant"})


def text_delta(index: int, text: str) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}})


def content_block_start(index: int, tool_use_id: str, name: str) -> bytes:
    return event(
        "contentBlockStart",
        {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}},
    )


def content_block_stop(index: int) -> bytes:
    return event("contentBlockStop", {"contentBlockIndex": index})


def message_stop(reason: str = "end_turn") -> bytes:
    return event("messageStop", {"stopReason": reason})


def metadata(counts: dict[str, Any] | None = None) -> bytes:
    return event("metadata", {"usage": counts if counts is not None else usage(), "metrics": {"latencyMs": 388}})


def text_events(pieces: Iterable[str], index: int = 0) -> list[bytes]:
    return [text_delta(index, p) for p in pieces] + [content_block_stop(index)]


def tool_use_events(index: int, tool_use_id: str, name: str, input_pieces: Iterable[str]) -> list[bytes]:
    deltas = [
        event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": p}}})
        for p in input_pieces
    ]
    return [content_block_start(index, tool_use_id, name), *deltas, content_block_stop(index)]


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def stream_reply(frames: Iterable[bytes], *, pieces: int | None = None, disconnect: bool = False) -> Reply:
    """A ConverseStream answer; ``pieces`` re-cuts the bytes so frames straddle TCP writes."""
    data = b"".join(frames)
    body: list[bytes | Pause] = list(split(data, pieces)) if pieces else [data]
    headers = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "req-0002"}
    return Reply(200, headers, body, chunked=True, disconnect=disconnect)


# --------------------------------------------------------------------------- signature check


def check_signature(request: Recorded, *, secret: str, session_token: str | None) -> str | None:
    """Why the request's SigV4 signature is wrong, or None when it verifies."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    match = _AUTH.fullmatch(request.headers.get("authorization", ""))
    if match is None:
        return "Authorization header is not an AWS4-HMAC-SHA256 signature"
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    if session_token is not None and request.headers.get("x-amz-security-token") != session_token:
        return "missing or wrong x-amz-security-token"
    if not request.headers.get("x-amz-date", "").startswith(match["date"]):
        return "credential scope date does not match x-amz-date"
    url = f"http://{request.headers['host']}{request.path}" + (f"?{request.query}" if request.query else "")
    aws = AWSRequest(method=request.method, url=url, data=request.body, headers={h: request.headers[h] for h in signed})
    aws.context["timestamp"] = request.headers["x-amz-date"]
    signer = SigV4Auth(Credentials(match["key"], secret, session_token), "bedrock", match["region"])
    expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
    return None if expected == match["signature"] else "The request signature we calculated does not match"


# --------------------------------------------------------------------------- handler

Scripted = Reply | dict[str, Any] | Callable[[Recorded], Reply | dict[str, Any]]


class BedrockFake:
    """A handler that behaves like ``bedrock-runtime.<region>.amazonaws.com``.

    ``converse`` / ``stream`` script the replies (a Reply, a JSON dict, or a function of the
    request); by default Converse echoes the last user text and ConverseStream sends it word
    by word. ``bearer`` accepts a Bedrock API key instead of a signature.
    """

    def __init__(
        self,
        *,
        access_key: str = ACCESS_KEY,
        secret: str = SECRET_KEY,
        session_token: str | None = None,
        bearer: str | None = None,
        converse: Scripted | None = None,
        stream: Scripted | None = None,
    ) -> None:
        self.access_key = access_key
        self.secret = secret
        self.session_token = session_token
        self.bearer = bearer
        self.scripts: dict[str, Scripted | None] = {"converse": converse, "converse-stream": stream}
        self.model_ids: list[str] = []

    def __call__(self, request: Recorded) -> Reply:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        parts = request.path.split("/")
        if request.method != "POST" or len(parts) != 4 or parts[1] != "model" or parts[3] not in self.scripts:
            return error_reply(404, "UnknownOperationException", "Unknown operation")
        self.model_ids.append(unquote(parts[2]))
        script = self.scripts[parts[3]]
        if script is None:
            reply = self._default(request, streaming=parts[3] == "converse-stream")
        else:
            reply = script(request) if callable(script) else script
        return reply if isinstance(reply, Reply) else Reply.json(reply)

    def _authenticate(self, request: Recorded) -> Reply | None:
        if self.bearer is not None:
            if request.headers.get("authorization") == f"Bearer {self.bearer}":
                return None
            return error_reply(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        match = _AUTH.fullmatch(request.headers.get("authorization", ""))
        if match is None or match["key"] != self.access_key:
            return error_reply(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        why = check_signature(request, secret=self.secret, session_token=self.session_token)
        if why is not None:
            return error_reply(403, "InvalidSignatureException", why)
        return None

    @staticmethod
    def _default(request: Recorded, *, streaming: bool) -> Reply:
        turns = [t for t in request.json()["messages"] if t["role"] == "user"]
        said = "".join(b.get("text", "") for b in turns[-1]["content"]) if turns else ""
        if not streaming:
            return Reply.json(converse_response([said], usage_counts=usage(len(said.split()), len(said.split()))))
        words = said.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        counts = usage(len(words), len(words))
        return stream_reply([message_start(), *text_events(pieces), message_stop(), metadata(counts)])
