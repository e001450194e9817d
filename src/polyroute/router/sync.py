"""A blocking facade over :class:`~polyroute.router.Router` for scripts and notebooks.

All calls run on one event loop in a background thread (an anyio blocking portal), so the
router's pooled connections and concurrency slots are reused across calls, which a fresh
``asyncio.run`` per call could not do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from polyroute.types import ChatRequest, ChatResponse, ChatStreamEvent, EmbeddingRequest, EmbeddingResponse

if TYPE_CHECKING:
    from polyroute.router.router import Router

__all__ = ["SyncRouter"]


class SyncRouter:
    def __init__(self, router: Router) -> None:
        self.router = router
        self._lock = threading.Lock()
        self._cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None

    @property
    def portal(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                self._cm = start_blocking_portal("asyncio")
                self._portal = self._cm.__enter__()
            return self._portal

    def chat(self, request: ChatRequest) -> ChatResponse:
        return self.portal.call(self.router.chat, request)

    def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        return self.portal.call(self.router.embed, request)

    def stream(self, request: ChatRequest) -> Iterator[ChatStreamEvent]:
        agen = self.router.stream(request)
        portal = self.portal
        try:
            while True:
                try:
                    yield portal.call(agen.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            portal.call(agen.aclose)

    def close(self) -> None:
        """Close the router's providers and stop the background loop."""
        with self._lock:
            portal, cm = self._portal, self._cm
            self._portal = self._cm = None
        if portal is not None and cm is not None:
            portal.call(self.router.aclose)
            cm.__exit__(None, None, None)

    def __enter__(self) -> SyncRouter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
