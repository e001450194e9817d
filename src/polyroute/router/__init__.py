"""Routing policy: candidates, fallbacks, limits, timeouts, retries, breakers, balancing. Knows no HTTP."""

from polyroute.router.breaker import BreakerSettings
from polyroute.router.health import DeploymentHealth, RouterHealth
from polyroute.router.policy import Deployment, HedgePolicy, RoutingPolicy
from polyroute.router.retry import RetryPolicy
from polyroute.router.router import Router

__all__ = [
    "BreakerSettings",
    "Deployment",
    "DeploymentHealth",
    "HedgePolicy",
    "RetryPolicy",
    "Router",
    "RouterHealth",
    "RoutingPolicy",
]
