"""Running the app under uvicorn, with a shutdown that ends streams before waiting on them.

uvicorn's own graceful shutdown waits for open connections, then runs the lifespan
shutdown; an SSE stream would keep its connection open until the grace period ran out and
then be cut mid-event. :class:`_Server` therefore tells the runtime first, so streams end
with an ``error`` event and store what they have, while ordinary requests in flight finish.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Sequence
from importlib.util import find_spec

import uvicorn
from starlette.applications import Starlette

from polyroute.router import Router
from polyroute.runtime.app import create_app
from polyroute.runtime.settings import ServerSettings
from polyroute.runtime.state import Runtime

__all__ = ["build_server", "serve"]

logger = logging.getLogger("polyroute.runtime")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.runtime.begin_shutdown()
        await super().shutdown(sockets)


def _check_bind(settings: ServerSettings) -> None:
    if settings.auth_enabled:
        return
    logger.warning("auth is OFF: no API keys are configured (set POLYROUTE_API_KEYS); binding %s only", settings.host)
    if not settings.loopback:
        raise SystemExit(
            f"refusing to listen on {settings.host!r} without API keys: anyone who can reach it could use your "
            "provider keys. Set POLYROUTE_API_KEYS (or server.apiKeys) or bind 127.0.0.1."
        )


def build_server(app: Starlette, settings: ServerSettings) -> uvicorn.Server:
    """A uvicorn server for ``app`` (uvloop and httptools when installed)."""
    _check_bind(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if find_spec("uvloop") else "asyncio",
        http="httptools" if find_spec("httptools") else "h11",
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        log_level=settings.log_level,
        server_header=False,
        proxy_headers=False,
    )
    return _Server(config, app.state.runtime)


def serve(router: Router, settings: ServerSettings, *, disabled_providers: Sequence[str] = ()) -> None:
    """Serve until SIGINT/SIGTERM; refuses a non-loopback host when no API keys are configured."""
    app = create_app(router, settings, disabled_providers=disabled_providers)
    build_server(app, settings).run()
