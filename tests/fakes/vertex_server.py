"""Vertex AI's Gemini endpoints for :class:`fakes.upstream.FakeUpstream`.

Vertex speaks the Generative Language API's bodies (reused from :mod:`fakes.gemini_server`)
at project-scoped paths, ``POST /v1/projects/<p>/locations/<l>/publishers/google/models/
<model>:<method>``, authenticated by an OAuth bearer token: a missing or wrong token gets
the real 401 ``UNAUTHENTICATED`` body. ``:predict`` answers like the text-embedding models.
"""

from __future__ import annotations

from typing import Any

from fakes.gemini_server import GeminiFake, Scripted, error_reply
from fakes.upstream import Recorded, Reply

__all__ = ["VertexFake", "unauthenticated"]


def unauthenticated() -> Reply:
    message = (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential."
    )
    return error_reply(401, message, status="UNAUTHENTICATED")


class VertexFake(GeminiFake):
    """Accepts any token in ``tokens``; ``predict`` scripts the embeddings method."""

    def __init__(
        self,
        *,
        project: str = "demo-project",
        location: str = "us-central1",
        tokens: tuple[str, ...] = ("ya29.test-token",),
        predict: Scripted | None = None,
        **scripts: Any,
    ) -> None:
        super().__init__(version="v1", **scripts)
        self.tokens = tokens
        self.prefix = f"/v1/projects/{project}/locations/{location}/publishers/google/models/"
        self.scripts["predict"] = predict

    def __call__(self, request: Recorded) -> Reply:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return unauthenticated()
        if not request.path.startswith(self.prefix):
            return error_reply(404, f"{request.path} is not found")
        # Re-enter the Gemini router with the key and path it expects.
        request = Recorded(
            request.method,
            "/v1/models/" + request.path.removeprefix(self.prefix),
            request.query,
            {**request.headers, "x-goog-api-key": self.api_key},
            request.body,
        )
        return super().__call__(request)

    def _default_predict(self, request: Recorded) -> dict[str, Any]:
        instances = request.json()["instances"]
        return {
            "predictions": [
                {
                    "embeddings": {
                        "values": [float(len(item["content"])), float(i)],
                        "statistics": {"truncated": False, "token_count": len(item["content"].split())},
                    }
                }
                for i, item in enumerate(instances)
            ],
            "metadata": {"billableCharacterCount": sum(len(item["content"]) for item in instances)},
        }
