"""One probe for all replicas, refused keys skipped everywhere, tpm settled in Redis (real Redis on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from fakes.replicas import REDIS_URL, Frozen, replica, req
from fakes.scripted import ScriptedProvider, Step, unavailable
from polyroute import Router, errors
from polyroute.router.breaker import BreakerSettings
from polyroute.router.policy import Deployment
from polyroute.router.shared import SharedState
from polyroute.types import Usage

A = "a:m:-"  # the shared id of deployment a:m called without a key
#: the Retry-After that opens the circuit: long enough for the news to reach every replica on a
#: loaded machine before it passes, short enough to wait out
COOLDOWN = 1.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a transition another replica published; no timing claim."""
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def rate_limited(seconds: float) -> errors.RateLimitedError:
    return errors.RateLimitedError("slow down", provider="a", model="m", status=429, retry_after=seconds)


@pytest.fixture
async def trio(prefix: str) -> AsyncIterator[list[SharedState]]:
    states = [SharedState(REDIS_URL, prefix=prefix, clock=Frozen()) for _ in range(3)]
    for state in states:
        await state.start()
    yield states
    for state in states:
        await state.aclose()


Replica = tuple[Router, ScriptedProvider, ScriptedProvider]


async def open_everywhere(replicas: list[Replica], states: list[SharedState], seconds: float) -> None:
    """Replica 0 sees a 429 with Retry-After ``seconds``: its circuit opens and the others learn it."""
    r0, a0, _ = replicas[0]
    a0.steps = [Step(error=rate_limited(seconds))]
    assert (await r0.chat(req())).provider == "b"
    await states[0].flush()
    for state in states[1:]:
        await until(lambda s=state: s.remote_state(A)[0] is not None, "the circuit reached every replica")


async def past_the_deadline(replicas: list[Replica], seconds: float) -> None:
    await asyncio.sleep(seconds + 0.05)  # the other replicas' deadlines are real time
    for router, _, _ in replicas:
        clock = router.clock
        assert isinstance(clock, Frozen)
        clock.now += seconds + 1  # replica 0's own breaker runs on its frozen clock


def breaker() -> BreakerSettings:
    return BreakerSettings(failure_threshold=3, cooldown=30)


async def test_after_the_cooldown_exactly_one_replica_probes_and_its_success_reopens_the_way(
    trio: list[SharedState],
) -> None:
    replicas = [replica(state, Deployment("a:m"), breaker=breaker()) for state in trio]
    await open_everywhere(replicas, trio, COOLDOWN)
    assert replicas[1][0].health().deployments[0].remote_state in ("open", "half_open")
    await past_the_deadline(replicas, COOLDOWN)
    for _, a, _ in replicas:
        a.steps = [Step(delay=1.0)]  # a slow but healthy probe
    responses = await asyncio.gather(*(router.chat(req()) for router, _, _ in replicas))
    probes = [len(a.calls) - (i == 0) for i, (_, a, _) in enumerate(replicas)]  # not replica 0's 429
    assert sum(probes) == 1, probes
    skipped = [r for r in responses if r.provider == "b"]
    assert len(skipped) == 2
    for response in skipped:
        first = response.attempts[0]
        assert (first.outcome, first.error) == ("skipped", "CircuitOpen")
        assert "another replica's probe" in (first.message or "")
    for state in trio:
        await state.flush()
    for state in trio[1:]:
        await until(lambda s=state: s.remote_state(A)[0] is None, "the closed circuit reached every replica")
    for router, _, _ in replicas:
        assert (await router.chat(req())).provider == "a"


async def test_a_failed_shared_probe_opens_the_circuit_again_for_every_replica(trio: list[SharedState]) -> None:
    replicas = [replica(state, Deployment("a:m"), breaker=breaker()) for state in trio]
    await open_everywhere(replicas, trio, COOLDOWN)
    await past_the_deadline(replicas, COOLDOWN)
    prober, a1, _ = replicas[1]  # a replica whose own breaker never saw a failure
    a1.steps = [Step(error=unavailable("a"))]
    response = await prober.chat(req())
    assert [(x.provider, x.outcome) for x in response.attempts] == [("a", "error"), ("b", "ok")]
    assert prober.health().deployments[0].state == "open"  # one failed probe is enough
    await trio[1].flush()
    for i in (0, 2):
        await until(lambda s=trio[i]: s.remote_state(A)[0] == "open", "the re-opened circuit reached the others")
        assert 25 < trio[i].remote_open(A) <= 30  # the cooldown, not the short Retry-After
    router2, a2, _ = replicas[2]
    skipped = (await router2.chat(req())).attempts[0]
    assert (skipped.error, a2.calls) == ("CircuitOpen", [])
    assert "another replica" in (skipped.message or "")


async def test_a_probe_lease_outlives_a_replica_that_died_mid_probe_only_briefly(trio: list[SharedState]) -> None:
    replicas = [replica(state, Deployment("a:m"), breaker=breaker()) for state in trio[:2]]
    await open_everywhere(replicas, trio[:2], COOLDOWN)
    await past_the_deadline(replicas, COOLDOWN)
    assert await trio[2].claim_probe(A, 2.0) is True  # a third replica takes the lease, then "dies"
    router, a, _ = replicas[1]
    first = (await router.chat(req())).attempts[0]
    assert (first.error, a.calls) == ("CircuitOpen", [])
    assert "another replica's probe" in (first.message or "")
    await asyncio.sleep(2.1)  # the dead replica's lease expires
    assert (await router.chat(req())).provider == "a" and len(a.calls) == 1


async def test_a_cancelled_probe_gives_its_lease_back(trio: list[SharedState]) -> None:
    replicas = [replica(state, Deployment("a:m"), breaker=breaker()) for state in trio[:2]]
    await open_everywhere(replicas, trio[:2], COOLDOWN)
    await past_the_deadline(replicas, COOLDOWN)
    router, a, _ = replicas[1]
    a.steps = [Step(delay=5)]
    call = asyncio.ensure_future(router.chat(req()))
    await until(lambda: len(a.calls) == 1, "the probe started")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await trio[1].flush()
    assert await trio[2].claim_probe(A, 1.0) is True  # the lease is free again


async def test_without_redis_each_replica_probes_on_its_own() -> None:
    down = SharedState("redis://127.0.0.1:1/0", prefix="unused", retry_interval=60)
    router, a, _ = replica(down, Deployment("a:m"), breaker=BreakerSettings(failure_threshold=1, cooldown=5))
    a.steps = [Step(error=unavailable("a"))]
    await router.chat(req())
    clock = router.clock
    assert isinstance(clock, Frozen)
    clock.now += 6
    response = await router.chat(req())
    await down.aclose()
    assert response.provider == "a" and len(a.calls) == 2  # the local breaker's probe, no lease needed


# ---------------------------------------------------------------- refused keys


async def test_a_key_refused_on_one_replica_is_skipped_by_every_replica_with_that_key(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    states = [SharedState(REDIS_URL, prefix=prefix) for _ in range(2)]
    for state in states:
        await state.start()
    r0, a0, _ = replica(states[0], Deployment("a:m"), key="sk-revoked")
    r1, a1, _ = replica(states[1], Deployment("a:m"), key="sk-revoked")
    a0.steps = [Step(error=errors.AuthenticationError("bad key", provider="a", model="m", status=401))]
    try:
        assert (await r0.chat(req())).provider == "b"
        await states[0].flush()
        shared_id = r0.deployments.get("a", "m").shared_id
        assert "sk-revoked" not in shared_id  # a fingerprint, never the key
        await until(lambda: states[1].remote_state(shared_id)[0] == "auth_failed", "the refused key reached replica 1")
        with caplog.at_level(logging.WARNING, logger="polyroute.router"):
            response = await r1.chat(req())
        assert (response.provider, a1.calls) == ("b", [])
        skipped = response.attempts[0]
        assert (skipped.outcome, skipped.error) == ("skipped", "AuthFailed")
        assert "another replica" in (skipped.message or "")
        assert any("refused" in r.getMessage() and "sk-revoked" not in r.getMessage() for r in caplog.records)
        assert r1.health().to_dict()["deployments"][0]["remoteState"] == "auth_failed"

        later = SharedState(REDIS_URL, prefix=prefix)  # started after the failure
        r2, a2, _ = replica(later, Deployment("a:m"), key="sk-revoked")
        await later.start()
        assert (await r2.chat(req())).provider == "b" and a2.calls == []
        await later.aclose()

        fresh = SharedState(REDIS_URL, prefix=prefix)  # a replica with a new key calls it
        r3, a3, _ = replica(fresh, Deployment("a:m"), key="sk-rotated")
        await fresh.start()
        assert (await r3.chat(req())).provider == "a" and len(a3.calls) == 1
        await fresh.aclose()
    finally:
        for state in states:
            await state.aclose()


# ---------------------------------------------------------------- tpm settles in Redis


async def test_shared_tpm_settles_to_the_usage_calls_reported(pair: tuple[SharedState, SharedState]) -> None:
    import redis

    used = Usage(prompt_tokens=40, completion_tokens=60, total_tokens=100)
    # 60000 tpm holds 1000 tokens; each call is estimated at 1 + 400 = 401 and really uses 100
    replicas = [replica(state, Deployment("a:m", tpm=60_000)) for state in pair]
    for _, a, _ in replicas:
        a.steps = [Step(usage=used) for _ in range(10)]
    served = 0
    for i in range(10):
        router, _, _ = replicas[i % 2]
        if (await router.chat(req(max_tokens=400))).provider == "a":
            served += 1
        for state in pair:
            await state.flush()
    # unsettled: 1000 -> 599 -> 198, two calls; settled: 1000, 900, ..., 500 >= 401, six calls
    assert served == 6
    client = redis.Redis.from_url(REDIS_URL)
    try:
        level = float(client.hget(f"{pair[0].prefix}:limit:{A}:tpm", "l") or 0)
    finally:
        client.close()
    assert level == pytest.approx(1000 - 6 * 100)
