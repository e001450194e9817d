"""RetryPolicy.wait_before_retry: full-jitter bounds, the Retry-After floor and cap, what is never retried."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyroute import RetryPolicy, errors


class TopOfRange(random.Random):
    """An rng whose uniform draw is always the top of the range: the wait *is* the jitter bound."""

    def uniform(self, a: float, b: float) -> float:
        return b


def bound(policy: RetryPolicy, n: int) -> float:
    return min(policy.backoff_cap, policy.backoff_base * 2 ** (n - 1))


policies = st.builds(
    RetryPolicy,
    max_retries=st.integers(0, 8),
    backoff_base=st.floats(0.001, 5.0),
    backoff_cap=st.floats(0.001, 60.0),
    max_retry_after=st.floats(0.0, 120.0),
)
#: retryable errors without provider advice
plain_retryable = st.sampled_from(
    [
        errors.RateLimitedError("429"),
        errors.ProviderUnavailableError("503"),
        errors.TimeoutError("slow", kind="first_token"),
        errors.StreamInterruptedError("cut", kind="truncated"),
    ]
)
never_retried = st.sampled_from(
    [
        errors.BadRequestError("400"),
        errors.ContextLengthExceededError("too long"),
        errors.UnsupportedFeatureError("no tools"),
        errors.ContentFilteredError("filtered"),
        errors.AuthenticationError("401"),
        errors.PermissionDeniedError("403"),
        errors.ModelNotFoundError("404"),
        errors.NotConfiguredError("no key"),
        errors.ProviderUnavailableError("down, but the provider says do not retry", retryable=False),
    ]
)
seeds = st.integers(0, 2**32)


@given(policies, plain_retryable, seeds, st.data())
def test_wait_is_full_jitter_within_the_doubling_bound(
    policy: RetryPolicy, error: errors.PolyrouteError, seed: int, data: st.DataObject
) -> None:
    if policy.max_retries == 0:
        assert policy.wait_before_retry(1, error, random.Random(seed)) is None
        return
    n = data.draw(st.integers(1, policy.max_retries), label="retry")
    wait = policy.wait_before_retry(n, error, random.Random(seed))
    assert wait is not None and 0.0 <= wait <= bound(policy, n)


@given(policies, st.sampled_from([errors.RateLimitedError, errors.ProviderUnavailableError]), seeds, st.data())
def test_retry_after_is_a_floor_and_above_the_cap_means_move_on(
    policy: RetryPolicy, kind: type[errors.RateLimitedError | errors.ProviderUnavailableError], seed: int,
    data: st.DataObject,
) -> None:
    if policy.max_retries == 0:
        return
    n = data.draw(st.integers(1, policy.max_retries), label="retry")
    advised = data.draw(st.floats(0.0, 200.0), label="retry_after")
    wait = policy.wait_before_retry(n, kind("busy", retry_after=advised), random.Random(seed))
    if advised > policy.max_retry_after:
        assert wait is None
    else:
        assert wait is not None and advised <= wait <= max(advised, bound(policy, n))


@given(policies, never_retried, seeds, st.integers(1, 10))
def test_errors_that_are_not_retryable_are_never_waited_for(
    policy: RetryPolicy, error: errors.PolyrouteError, seed: int, n: int
) -> None:
    assert not error.retryable
    assert policy.wait_before_retry(n, error, random.Random(seed)) is None


@given(policies, plain_retryable, seeds, st.integers(1, 5))
def test_no_wait_past_the_last_retry(policy: RetryPolicy, error: errors.PolyrouteError, seed: int, extra: int) -> None:
    assert policy.wait_before_retry(policy.max_retries + extra, error, random.Random(seed)) is None


@given(
    st.floats(0.001, 2.0),
    st.floats(0.001, 60.0),
    st.integers(1, 12),
)
def test_the_bound_doubles_per_retry_until_the_cap(base: float, cap: float, retries: int) -> None:
    policy = RetryPolicy(max_retries=retries, backoff_base=base, backoff_cap=cap)
    error = errors.ProviderUnavailableError("503")
    tops = [policy.wait_before_retry(n, error, TopOfRange()) for n in range(1, retries + 1)]
    assert tops[0] == pytest.approx(min(cap, base))
    for before, after in zip(tops, tops[1:], strict=False):
        assert before is not None and after is not None
        assert after == pytest.approx(min(cap, 2 * before))
        assert after >= before


@given(policies, plain_retryable, seeds)
def test_the_same_rng_seed_gives_the_same_waits(policy: RetryPolicy, error: errors.PolyrouteError, seed: int) -> None:
    def waits() -> list[float | None]:
        rng = random.Random(seed)
        return [policy.wait_before_retry(n, error, rng) for n in range(1, policy.max_retries + 1)]

    assert waits() == waits()


def test_concrete_bounds() -> None:
    policy = RetryPolicy(max_retries=6, backoff_base=0.25, backoff_cap=2.0)
    error = errors.RateLimitedError("429")
    assert [policy.wait_before_retry(n, error, TopOfRange()) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert policy.wait_before_retry(1, errors.RateLimitedError("429", retry_after=1.5), TopOfRange()) == 1.5
    assert policy.wait_before_retry(1, errors.RateLimitedError("429", retry_after=31.0), TopOfRange()) is None
    assert policy.wait_before_retry(7, error, TopOfRange()) is None
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
