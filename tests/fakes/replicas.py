"""Router replicas sharing state through the real Redis on 127.0.0.1:6379, for the shared-state tests."""

from __future__ import annotations

from fakes.scripted import ScriptedProvider
from polyroute import ChatRequest, Message, Router
from polyroute.router.breaker import BreakerSettings
from polyroute.router.policy import Deployment, RoutingPolicy
from polyroute.router.shared import SharedState

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reason() -> str | None:
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install 'polyroute[redis]')"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.RedisError as exc:
        return f"no Redis on 127.0.0.1:6379 ({type(exc).__name__}); `.ci/run` starts one"
    return None


class Frozen:
    """A clock that does not move: buckets never refill, so admissions are exact."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def req(**kw: object) -> ChatRequest:
    return ChatRequest(model="chat", messages=[Message.user("hi")], **kw)  # type: ignore[arg-type]


def replica(
    shared: SharedState,
    limited: Deployment,
    *,
    fallback: bool = True,
    breaker: BreakerSettings | None = None,
    key: str | None = None,
) -> tuple[Router, ScriptedProvider, ScriptedProvider]:
    """One replica: alias ``chat`` = the limited ``a:m`` (called with ``key``) then (optionally) ``b:m``."""
    router = Router(shared=shared, clock=Frozen(), breaker=breaker, timeout=5)
    router.add_alias("chat", [limited, *(["b:m"] if fallback else [])], policy=RoutingPolicy(strategy="ordered"))
    a = router.register(ScriptedProvider("a"))
    b = router.register(ScriptedProvider("b"))
    assert isinstance(a, ScriptedProvider) and isinstance(b, ScriptedProvider)
    if key is not None:
        a.api_key = key  # type: ignore[attr-defined]  # the router fingerprints a provider's api_key
    return router, a, b
