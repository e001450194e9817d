"""``/health`` (is the process up?) and ``/ready`` (can it serve: database and providers).

``/ready`` lists every registered provider, and every provider named in
``disabled_providers``, with one of three states: ``available``, ``not_configured`` (with
the environment variable that is missing) or ``disabled``. It answers 200 when the database
answers and at least one provider is available, else 503, so a load balancer can route on it.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from polyroute.runtime.state import Runtime, runtime_of
from polyroute.runtime.views import JSONResponse

__all__ = ["health", "provider_status", "ready", "router_health"]

logger = logging.getLogger("polyroute.runtime")


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def provider_status(runtime: Runtime) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, provider in runtime.router.providers.items():
        capabilities = provider.capabilities.as_dict()
        if name in runtime.disabled:
            out[name] = {"status": "disabled", "capabilities": capabilities}
            continue
        missing = provider.missing_config()
        if missing:
            out[name] = {"status": "not_configured", "missingEnvVar": missing, "capabilities": capabilities}
        else:
            out[name] = {"status": "available", "capabilities": capabilities}
    for name in sorted(runtime.disabled - out.keys()):
        out[name] = {"status": "disabled"}
    return out


async def ready(request: Request) -> Response:
    runtime = runtime_of(request)
    database: dict[str, Any] = {"backend": runtime.database.backend}
    try:
        await runtime.store.ping()
        database["status"] = "ok"
    except Exception as exc:
        logger.warning("readiness check: database unavailable (%s)", type(exc).__name__)
        database["status"] = "unavailable"
    providers = provider_status(runtime)
    ok = database["status"] == "ok" and any(p["status"] == "available" for p in providers.values())
    if runtime.closing:
        ok = False
    body = {"status": "ready" if ok else "not_ready", "database": database, "providers": providers}
    return JSONResponse(body, status_code=200 if ok else 503)


async def router_health(request: Request) -> Response:
    """The router's live view of every deployment it has seen (breaker state, errors, latency)."""
    return JSONResponse(runtime_of(request).router.health().to_dict())
