"""The ASGI application: routes, middleware, error handlers, and the storage lifecycle.

Middleware, outermost first: the catch-all (no traceback ever reaches a client), the body
size limit, then auth; Starlette's exception middleware inside them maps typed errors to
responses. No ``BaseHTTPMiddleware`` is used: it would cancel handlers when a client
disconnects, and a turn that has called the model must still be stored.

The lifespan opens the database (running migrations) before the first request and, at
shutdown, ends open streams, waits for their final writes, closes the router's provider
clients and disposes of the engine, in that order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from polyroute.router import Router
from polyroute.runtime.auth import AuthMiddleware
from polyroute.runtime.body import BodyLimitMiddleware
from polyroute.runtime.errors import CatchAllMiddleware, exception_handlers
from polyroute.runtime.openapi import docs_page, openapi_json
from polyroute.runtime.routes import routes
from polyroute.runtime.settings import ServerSettings
from polyroute.runtime.state import Runtime
from polyroute.types import build_models

__all__ = ["create_app"]

logger = logging.getLogger("polyroute.runtime")


def create_app(router: Router, settings: ServerSettings, *, disabled_providers: Sequence[str] = ()) -> Starlette:
    """An app serving ``router``; storage opens on startup and closes on shutdown."""
    runtime = Runtime(router, settings, disabled_providers=disabled_providers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        build_models()  # pay for validator construction now, not on the first request
        await runtime.start()
        logger.info(
            "storage ready (%s); auth %s",
            runtime.database.backend,
            f"on ({len(settings.api_keys)} key(s))" if settings.auth_enabled else "off",
        )
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        routes=[
            *routes(),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/docs", docs_page, methods=["GET"]),
        ],
        middleware=[
            Middleware(CatchAllMiddleware, debug=settings.debug),
            Middleware(BodyLimitMiddleware, limit=settings.max_body_bytes),
            Middleware(AuthMiddleware, keys=settings.api_keys),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.redactor = runtime.redactor
    return app
