"""The OpenAI, Gemini and Anthropic wire formats as the fault tests script them.

A :class:`Wire` pairs a real provider client with builders for what that provider sends: a
stream's events (head, tokens, finish), its in-stream error event, its HTTP error bodies
(500, overloaded, bad key, bad request, 429 with its own spelling of Retry-After) and, for
plain calls, a whole answer, a 200 carrying an error object and a 200 with no answer in it.
Shared by the fault matrix (``fakes.fault_matrix``), the backoff and the hedging wire tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fakes import anthropic_server as an
from fakes import gemini_server as gm
from fakes import openai_server as oa
from fakes.upstream import Pause, Reply
from polyroute.providers.anthropic import AnthropicProvider
from polyroute.providers.base import Provider
from polyroute.providers.gemini import GeminiProvider
from polyroute.providers.openai import OpenAIProvider

__all__ = ["RETRY_AFTER", "TOKENS", "WIRES", "WIRE_IDS", "Wire", "body_of"]

TOKENS = ["Hel", "lo", " there"]
#: the Retry-After every wire's 429 carries, in seconds
RETRY_AFTER = 1


@dataclass
class Wire:
    """How one wire format spells a stream, a plain answer and its errors."""

    name: str
    make: Callable[[str], Provider]
    head: Callable[[], list[str]]  # events before any token
    token: Callable[[str], str]
    tail: Callable[[], list[str]]  # finish events (finish reason, usage, [DONE] / message_stop)
    error_event: Callable[[], str]
    http_500: Callable[[], Reply]
    overloaded: Callable[[], Reply]
    unauthorized: Callable[[], Reply]
    bad_request: Callable[[], Reply]
    rate_limited: Callable[[], Reply]
    #: plain calls: the whole answer ("".join(TOKENS)), a 200 whose body is an error object,
    #: and a 200 whose JSON has no answer in it (no choices / candidates / content)
    answer: Callable[[], Reply]
    error_in_body: Callable[[], Reply]
    no_answer: Callable[[], Reply]
    malformed: str = "data: {not json\n\n"

    def tokens(self, n: int = len(TOKENS)) -> list[str]:
        return [self.token(t) for t in TOKENS[:n]]

    def clean(self) -> list[str]:
        return [*self.head(), *self.tokens(), *self.tail()]

    def cut_answer(self, *middle: Pause, disconnect: bool = False) -> Reply:
        """The plain answer sent in two halves with ``middle`` between them, or dropped after the first."""
        body = body_of(self.answer())
        half = len(body) // 2
        if disconnect:  # chunked, so ending the connection early is visibly an incomplete body
            return Reply(200, {"content-type": "application/json"}, [body[:half]], chunked=True, disconnect=True)
        return Reply(200, {"content-type": "application/json"}, [body[:half], *middle, body[half:]])


def body_of(reply: Reply) -> bytes:
    return b"".join(p for p in reply.body if isinstance(p, bytes))


def _oa_tail() -> list[str]:
    return [oa.sse(oa.chunk({}, finish_reason="stop")), oa.sse(oa.usage_chunk()), oa.sse("[DONE]")]


def _gm_token(text: str) -> str:
    return gm.sse_body([gm.chunk([text])]).decode()


def _an_head() -> list[str]:
    start = {"type": "content_block_start", "index": 0, "content_block": an.text_block("")}
    return [an.message_start(), an.event("content_block_start", start)]


def _an_token(text: str) -> str:
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return an.event("content_block_delta", delta)


def _an_tail() -> list[str]:
    stop = an.event("content_block_stop", {"type": "content_block_stop", "index": 0})
    return [stop, an.message_delta(), an.message_stop()]


ANSWER = "".join(TOKENS)

WIRES = [
    Wire(
        "openai",
        lambda url: OpenAIProvider(api_key="sk-test", base_url=url + "/v1"),
        lambda: [oa.sse(oa.chunk({"role": "assistant", "content": ""}))],
        lambda t: oa.sse(oa.chunk({"content": t})),
        _oa_tail,
        lambda: oa.sse({"error": {"message": "The server had an error", "type": "server_error"}}),
        lambda: oa.error_reply(500, "The server had an error", "server_error"),
        lambda: oa.error_reply(503, "The engine is currently overloaded, please try again later", "server_error"),
        oa.invalid_api_key,
        lambda: oa.error_reply(400, "Invalid value for 'temperature'.", param="temperature"),
        lambda: oa.rate_limited(headers={"retry-after": str(RETRY_AFTER)}),
        lambda: oa.completion_reply(ANSWER),
        lambda: Reply.json({"error": {"message": "The server had an error", "type": "server_error"}}),
        lambda: Reply.json({"id": oa.COMPLETION_ID, "object": "chat.completion", "model": oa.MODEL}),
    ),
    Wire(
        "gemini",
        lambda url: GeminiProvider(api_key="g-test", base_url=url),
        lambda: [],
        _gm_token,
        lambda: [gm.sse_body([gm.chunk([], finish="STOP", usage_metadata=gm.usage(3, 3))]).decode()],
        lambda: gm.sse_body([gm.error_body(503, "The model is overloaded.")]).decode(),
        lambda: gm.error_reply(500, "Internal error encountered."),
        lambda: gm.error_reply(503, "The model is overloaded. Please try again later."),
        gm.api_key_invalid,
        lambda: gm.error_reply(400, "Invalid value at 'generation_config.temperature'."),
        lambda: gm.rate_limited(f"{RETRY_AFTER}s"),
        lambda: Reply.json(gm.response([ANSWER], usage_metadata=gm.usage(3, 3))),
        lambda: Reply.json(gm.error_body(503, "The model is overloaded.")),
        lambda: Reply.json({"modelVersion": "gemini-2.0-flash", "responseId": "resp-1"}),
    ),
    Wire(
        "anthropic",
        lambda url: AnthropicProvider(api_key="a-test", base_url=url),
        _an_head,
        _an_token,
        _an_tail,
        an.error_event,
        lambda: an.error_reply(500, "api_error", "Internal server error"),
        lambda: an.error_reply(529, "overloaded_error", "Overloaded"),
        lambda: an.error_reply(401, "authentication_error", "invalid x-api-key"),
        lambda: an.error_reply(400, "invalid_request_error", "temperature: range: 0..1"),
        lambda: an.error_reply(
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
            {"retry-after": str(RETRY_AFTER)},
        ),
        lambda: an.message_reply([an.text_block(ANSWER)]),
        lambda: Reply.json(an.error_body("overloaded_error", "Overloaded")),
        lambda: Reply.json({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant"}),
    ),
]
WIRE_IDS = [w.name for w in WIRES]
