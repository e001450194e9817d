"""Routing policy: candidates, fallbacks, limits, timeouts and retries. Knows no HTTP."""

from polyroute.router.retry import RetryPolicy
from polyroute.router.router import Router

__all__ = ["RetryPolicy", "Router"]
