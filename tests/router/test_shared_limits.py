"""rpm/tpm limits and open circuits shared by router replicas through a real Redis on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys

import pytest

from fakes.replicas import REDIS_URL, Frozen, replica, req
from fakes.scripted import ScriptedProvider, Step, unavailable
from polyroute import ChatRequest, Message, Router
from polyroute.config import build_router
from polyroute.config.schema import Settings
from polyroute.errors import ConfigError
from polyroute.router.breaker import BreakerSettings
from polyroute.router.policy import Deployment
from polyroute.router.shared import SharedState


async def test_two_replicas_enforce_one_combined_rpm_limit(pair: tuple[SharedState, SharedState]) -> None:
    # 300 rpm holds 5 requests (one second's worth); the frozen clock never refills it
    r1, a1, b1 = replica(pair[0], Deployment("a:m", rpm=300))
    r2, a2, b2 = replica(pair[1], Deployment("a:m", rpm=300))
    responses = [await (r1 if i % 2 else r2).chat(req()) for i in range(10)]
    assert len(a1.calls) + len(a2.calls) == 5  # per process it would be 5 each: 10
    assert len(b1.calls) + len(b2.calls) == 5
    assert [r.provider for r in responses] == ["a"] * 5 + ["b"] * 5
    skipped = responses[-1].attempts[0]
    assert (skipped.outcome, skipped.error) == ("skipped", "LocalRateLimit")
    assert r1.health().to_dict()["sharedState"] == "ok"


async def test_two_replicas_enforce_one_combined_tpm_limit(pair: tuple[SharedState, SharedState]) -> None:
    # 60000 tpm holds 1000 tokens; each call asks for ~301 (prompt estimate + max_tokens)
    r1, a1, _ = replica(pair[0], Deployment("a:m", tpm=60_000))
    r2, a2, _ = replica(pair[1], Deployment("a:m", tpm=60_000))
    await asyncio.gather(*((r1 if i % 2 else r2).chat(req(max_tokens=300)) for i in range(8)))
    assert len(a1.calls) + len(a2.calls) == 3


async def test_over_the_shared_limit_waits_when_nothing_else_serves(prefix: str) -> None:
    # Redis's own clock: 120 rpm holds 2 and refills one every 0.5 s
    one, two = SharedState(REDIS_URL, prefix=prefix), SharedState(REDIS_URL, prefix=prefix)
    r1, a1, _ = replica(one, Deployment("a:m", rpm=120), fallback=False)
    r2, a2, _ = replica(two, Deployment("a:m", rpm=120), fallback=False)
    try:
        responses = [await (r1 if i % 2 else r2).chat(req()) for i in range(4)]
    finally:
        await one.aclose()
        await two.aclose()
    assert len(a1.calls) == len(a2.calls) == 2
    waited = [r.attempts[-1] for r in responses if r.attempts[-1].waited > 0]
    assert waited, "two replicas of 2 each never waited: the limit was not shared"
    assert all("rpm/tpm" in (a.note or "") for a in waited)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_redis_down_falls_back_to_local_limits_and_reports_degraded(caplog: pytest.LogCaptureFixture) -> None:
    down = SharedState(f"redis://127.0.0.1:{_closed_port()}/0", prefix="unused", retry_interval=60)
    router, a, b = replica(down, Deployment("a:m", rpm=300))
    with caplog.at_level(logging.WARNING, logger="polyroute.router"):
        responses = [await router.chat(req()) for _ in range(8)]
    await down.aclose()
    assert all(r.message.text == "Hello, world" for r in responses)
    assert (len(a.calls), len(b.calls)) == (5, 3)  # this replica's own bucket of 5
    assert router.health().shared_state == "degraded"
    assert router.health().to_dict()["sharedState"] == "degraded"
    warnings = [r for r in caplog.records if "shared router state unavailable" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_slow_redis_is_abandoned_after_the_timeout(prefix: str) -> None:
    """A server that accepts but never answers costs one short timeout, then local limits."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow = SharedState(f"redis://127.0.0.1:{port}/0", prefix=prefix, timeout=0.05)
    router, a, _ = replica(slow, Deployment("a:m", rpm=300))
    try:
        response = await router.chat(req())
    finally:
        await slow.aclose()
        server.close()
    assert response.provider == "a" and len(a.calls) == 1
    assert slow.status == "degraded"


async def test_only_deployments_with_limits_use_shared_buckets(prefix: str) -> None:
    import redis

    shared = SharedState(REDIS_URL, prefix=prefix)
    router = Router(shared=shared)
    router.add_alias("free", ["a:m"])
    router.add_alias("metered", [Deployment("b:m", rpm=60)])
    router.register(ScriptedProvider("a"))
    router.register(ScriptedProvider("b"))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await router.chat(ChatRequest(model="free", messages=[Message.user("hi")]))
        assert list(client.scan_iter(match=f"{prefix}:limit:*")) == []
        await router.chat(ChatRequest(model="metered", messages=[Message.user("hi")]))
        assert sorted(client.scan_iter(match=f"{prefix}:limit:*")) == [f"{prefix}:limit:b:m:-:rpm".encode()]
    finally:
        client.close()
        await shared.aclose()


# ---------------------------------------------------------------- circuits


async def test_a_circuit_opened_by_one_replica_is_skipped_by_the_other(
    pair: tuple[SharedState, SharedState],
) -> None:
    breaker = BreakerSettings(failure_threshold=1)
    r1, a1, _ = replica(pair[0], Deployment("a:m"), breaker=breaker)
    r2, a2, b2 = replica(pair[1], Deployment("a:m"), breaker=breaker)
    await pair[1].start()
    a1.steps = [Step(error=unavailable("a"))]
    assert (await r1.chat(req())).provider == "b"
    await pair[0].flush()
    for _ in range(200):  # until the published transition arrives (bounded, no timing claim)
        if pair[1].remote_open("a:m:-") > 0:
            break
        await asyncio.sleep(0.01)
    response = await r2.chat(req())
    assert response.provider == "b" and a2.calls == []
    skipped = response.attempts[0]
    assert (skipped.provider, skipped.outcome, skipped.error) == ("a", "skipped", "CircuitOpen")
    assert "another replica" in (skipped.message or "")
    assert r2.health().deployments[0].state == "closed"  # its own breaker saw nothing


async def test_a_replica_started_later_sees_circuits_already_open(prefix: str) -> None:
    breaker = BreakerSettings(failure_threshold=1, cooldown=30)
    first = SharedState(REDIS_URL, prefix=prefix)
    r1, a1, _ = replica(first, Deployment("a:m"), breaker=breaker)
    a1.steps = [Step(error=unavailable("a"))]
    await r1.chat(req())
    await first.flush()
    later = SharedState(REDIS_URL, prefix=prefix)
    r2, a2, _ = replica(later, Deployment("a:m"), breaker=breaker)
    try:
        await later.start()
        assert 0 < later.remote_open("a:m:-") <= 30
        assert (await r2.chat(req())).provider == "b" and a2.calls == []
    finally:
        await first.aclose()
        await later.aclose()


async def test_a_successful_probe_closes_the_circuit_for_every_replica(
    pair: tuple[SharedState, SharedState],
) -> None:
    breaker = BreakerSettings(failure_threshold=1, cooldown=5)
    r1, a1, _ = replica(pair[0], Deployment("a:m"), breaker=breaker)
    r2, a2, _ = replica(pair[1], Deployment("a:m"), breaker=breaker)
    await pair[1].start()
    a1.steps = [Step(error=unavailable("a"))]
    await r1.chat(req())
    await pair[0].flush()
    for _ in range(200):
        if pair[1].remote_open("a:m:-") > 0:
            break
        await asyncio.sleep(0.01)
    assert pair[1].remote_open("a:m:-") > 0
    clock = r1.clock
    assert isinstance(clock, Frozen)
    clock.now += 6  # replica one's cooldown ends: its probe succeeds
    assert (await r1.chat(req())).provider == "a"
    await pair[0].flush()
    for _ in range(200):
        if pair[1].remote_open("a:m:-") == 0:
            break
        await asyncio.sleep(0.01)
    assert (await r2.chat(req())).provider == "a" and len(a2.calls) == 1


# ---------------------------------------------------------------- configuration


def test_configuration_and_environment_select_shared_state(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_router(Settings(), {}).shared is None
    settings = Settings.model_validate({"runtime": {"router": {"sharedState": REDIS_URL}}})
    shared = build_router(settings, {}).shared
    assert shared is not None and shared.url == REDIS_URL
    from_env = build_router(Settings(), {"POLYROUTE_REDIS_URL": "redis://127.0.0.1:6380/1"}).shared
    assert from_env is not None and from_env.url == "redis://127.0.0.1:6380/1"
    with pytest.raises(ConfigError, match="redis://"):
        SharedState("http://127.0.0.1:6379")
    spelled_out = {"sharedState": {"url": REDIS_URL, "prefix": "prod-eu", "authTtl": 600}}
    shared = build_router(Settings.model_validate({"runtime": {"router": spelled_out}}), {}).shared
    assert shared is not None and (shared.url, shared.prefix, shared.auth_ttl) == (REDIS_URL, "prod-eu", 600)
    with pytest.raises(ValueError, match="authTtl|auth_ttl"):
        Settings.model_validate({"runtime": {"router": {"sharedState": {"url": REDIS_URL, "authTtl": 0}}}})


def test_the_router_imports_redis_only_when_shared_state_is_configured() -> None:
    code = "import sys, polyroute.router, polyroute.config; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
