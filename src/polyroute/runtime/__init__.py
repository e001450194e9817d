"""The HTTP runtime: agents, sessions and messages over the router, and an OpenAI-compatible /v1.

Entry points: :func:`create_app` (an ASGI app for any server) and :func:`serve` (uvicorn).
The design is described in ``docs/runtime.md``.
"""

from __future__ import annotations

from polyroute.runtime.app import create_app
from polyroute.runtime.server import serve
from polyroute.runtime.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]
