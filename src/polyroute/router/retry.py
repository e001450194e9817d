"""When to try the same candidate again, and how long to wait first.

Backoff is exponential with *full jitter* (a uniform wait between zero and the exponential
bound), which spreads retries from many clients instead of synchronising them. A provider's
own ``Retry-After`` advice is a floor on the wait; if honouring it would overrun the call's
deadline, the router moves on to the next candidate instead of sleeping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from polyroute.errors import PolyrouteError, ProviderUnavailableError, RateLimitedError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: extra tries of the same candidate after a retryable failure (0: fail over at once)
    max_retries: int = 0
    #: first backoff bound, seconds; doubles with each retry
    backoff_base: float = 0.25
    #: largest backoff bound, seconds
    backoff_cap: float = 8.0
    #: longest provider-advised wait we accept; a longer Retry-After means "move on"
    max_retry_after: float = 30.0
    #: hard cap on provider calls per router call, across the whole chain (no retry storms)
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_attempts < 1:
            raise ValueError("max_retries must be >= 0 and max_attempts >= 1")

    def wait_before_retry(
        self, retry_index: int, error: PolyrouteError, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before retry number ``retry_index`` (1-based), or None to move on."""
        if retry_index > self.max_retries or not error.retryable:
            return None
        bound = min(self.backoff_cap, self.backoff_base * (2 ** (retry_index - 1)))
        wait = (rng or random).uniform(0.0, bound)
        advised = error.retry_after if isinstance(error, (RateLimitedError, ProviderUnavailableError)) else None
        if advised is not None:
            if advised > self.max_retry_after:
                return None
            wait = max(wait, advised)
        return wait
