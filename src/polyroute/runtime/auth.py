"""API keys: who is calling, and what they own.

A key is accepted as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are never
stored or logged: the caller is identified by the SHA-256 of its key (the *owner hash*),
which is what agents and sessions record. A row owned by another hash is reported as not
found, so a key cannot even learn that another key's ids exist.

With no keys configured, auth is off, every caller is the anonymous owner ``""``, and the
server refuses to listen beyond loopback (see :func:`polyroute.runtime.server.serve`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from polyroute.runtime.errors import ApiError, render_error

__all__ = ["ANONYMOUS", "AuthMiddleware", "hash_key", "owner_of"]

ANONYMOUS = ""
#: paths reachable without a key
PUBLIC_PATHS = frozenset({"/health"})


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _presented_key(scope: Scope) -> str | None:
    raw: bytes
    for name, raw in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and raw.strip():
            return raw.decode("latin-1").strip()
    return None


class AuthMiddleware:
    """Checks the key on every HTTP request but ``PUBLIC_PATHS``; stores the owner hash in scope state."""

    def __init__(self, app: ASGIApp, *, keys: Iterable[str]) -> None:
        self.app = app
        self._hashes = [hash_key(k).encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        owner = ANONYMOUS
        if self._hashes and scope["path"] not in PUBLIC_PATHS:
            key = _presented_key(scope)
            if key is None:
                error = ApiError(
                    401,
                    "unauthorized",
                    "an API key is required (Authorization: Bearer <key> or X-API-Key: <key>)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await render_error(scope, error)(scope, receive, send)
                return
            digest = hash_key(key).encode()
            # compare against every configured hash so timing does not reveal which one matched
            matched = False
            for known in self._hashes:
                matched |= hmac.compare_digest(digest, known)
            if not matched:
                error = ApiError(
                    401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"}
                )
                await render_error(scope, error)(scope, receive, send)
                return
            owner = digest.decode()
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)


def owner_of(request: Request) -> str:
    """The owner hash the auth middleware attached to this request."""
    return str(request.scope.get("state", {}).get("owner", ANONYMOUS))
