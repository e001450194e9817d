"""Azure OpenAI replies for :class:`fakes.upstream.FakeUpstream`.

Azure answers with OpenAI's bodies (built by :mod:`fakes.openai_server`) plus its own
additions: ``prompt_filter_results`` in a stream's first chunk (whose ``choices`` is empty,
``id`` and ``model`` blank), ``content_filter_results`` on choices, and the 400
``content_filter`` error whose ``innererror.content_filter_result`` says which category
tripped. :class:`AzureFake` routes ``/openai/deployments/<name>/<op>?api-version=...``,
checks the ``api-key`` header (or a Bearer token) and the ``api-version`` query like Azure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import orjson

from fakes.openai_server import OpenAIFake, error_reply, sse
from fakes.upstream import Recorded, Reply

__all__ = [
    "AzureFake",
    "content_filter_error",
    "filter_results",
    "prompt_filter_chunk",
    "unauthorized",
]

_CATEGORIES = ("hate", "self_harm", "sexual", "violence")


def filter_results(filtered: Iterable[str] = ()) -> dict[str, Any]:
    """``content_filter_results``: every category, with those named marked filtered/high."""
    hit = set(filtered)
    out: dict[str, Any] = {
        name: {"filtered": name in hit, "severity": "high" if name in hit else "safe"} for name in _CATEGORIES
    }
    out["jailbreak"] = {"filtered": "jailbreak" in hit, "detected": "jailbreak" in hit}
    return out


def prompt_filter_chunk() -> str:
    """The first event of every Azure stream: no choices, only the prompt's filter verdicts."""
    data = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filter_results()}],
    }
    return sse(data)


def content_filter_error(*categories: str) -> Reply:
    message = (
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
        "Please modify your prompt and retry."
    )
    body = {
        "error": {
            "message": message,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": filter_results(categories),
            },
        }
    }
    return Reply(400, {"content-type": "application/json"}, [orjson.dumps(body)])


def unauthorized() -> Reply:
    body = {
        "error": {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
            "valid key for an active subscription and use a correct regional API endpoint for your resource.",
        }
    }
    return Reply(401, {"content-type": "application/json"}, [orjson.dumps(body)])


class AzureFake(OpenAIFake):
    """Accepts ``api-key: <api_key>`` or ``Authorization: Bearer <token>``; needs ``api-version``."""

    def __init__(
        self,
        api_key: str | None = "azure-key",
        *,
        token: str | None = None,
        deployments: Iterable[str] = ("gpt4o-prod", "embed-small"),
        api_version: str = "2024-10-21",
        **kw: Any,
    ) -> None:
        super().__init__(api_key=None, prefix="", **kw)
        self.azure_key = api_key
        self.token = token
        self.deployments = set(deployments)
        self.api_version = api_version

    def __call__(self, request: Recorded) -> Reply:
        key_ok = self.azure_key is not None and request.headers.get("api-key") == self.azure_key
        token_ok = self.token is not None and request.headers.get("authorization") == f"Bearer {self.token}"
        if not (key_ok or token_ok):
            return unauthorized()
        versions = parse_qs(request.query).get("api-version")
        if versions != [self.api_version]:
            return error_reply(404, "Resource not found", code="404")
        deployment, _, op = request.path.removeprefix("/openai/deployments/").partition("/")
        if not request.path.startswith("/openai/deployments/") or deployment not in self.deployments:
            message = "The API deployment for this resource does not exist."
            return error_reply(404, message, code="DeploymentNotFound")
        inner = Recorded(request.method, f"/{op}", request.query, request.headers, request.body)
        reply = super().__call__(inner)
        if op == "chat/completions" and reply.headers.get("content-type") == "text/event-stream":
            reply.body.insert(0, prompt_filter_chunk().encode())
        return reply
