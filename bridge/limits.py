"""Request-rate and call-count limits (design §3.8): pure bookkeeping, no clocks, no I/O.

`TokenBucket` admits a steady rate with a burst; `RateLimiter` keeps one bucket per key (a
conversation) and forgets buckets that have refilled, so its memory follows the live keys;
`CallCounter` counts live calls per route. Callers pass a monotonic `now` and decide what a
refusal means (a 429, a dropped frame).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

__all__ = ["CallCounter", "RateLimiter", "TokenBucket"]

# How often (in `now` seconds) RateLimiter drops buckets that are full again.
SWEEP_INTERVAL_S = 10.0


class TokenBucket:
    """`rate` requests per second on average, up to `burst` at once."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means over the limit (nothing spent)."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def full(self, now: float) -> bool:
        """Refilled to `burst`: indistinguishable from a fresh bucket."""
        self._refill(now)
        return self._tokens >= self.burst

    def reconfigure(self, rate: float, burst: float) -> None:
        """New limits (a config reload); the tokens held are capped at the new burst."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._tokens = min(self._tokens, burst)


class RateLimiter:
    """One token bucket per key; `allow(key, rate, burst, now)` is the only entry point."""

    def __init__(self) -> None:
        self._buckets: dict[Hashable, TokenBucket] = {}
        self._swept_at: float | None = None

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, rate: float, burst: float, now: float) -> bool:
        """Admit one request for `key` under `rate`/s with `burst`; False when over."""
        self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        elif (bucket.rate, bucket.burst) != (rate, burst):
            bucket.reconfigure(rate, burst)
        return bucket.take(now)

    def forget(self, key: Hashable) -> None:
        self._buckets.pop(key, None)

    def _sweep(self, now: float) -> None:
        if self._swept_at is not None and now - self._swept_at < SWEEP_INTERVAL_S:
            return
        self._swept_at = now
        for key in [key for key, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[key]


class CallCounter:
    """Live calls per route."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def count(self, route: str) -> int:
        return self._counts[route]

    def has_room(self, route: str, limit: int) -> bool:
        """True while `route` has fewer than `limit` live calls."""
        return self._counts[route] < limit

    def add(self, route: str) -> None:
        self._counts[route] += 1

    def remove(self, route: str) -> None:
        if self._counts[route] <= 1:
            del self._counts[route]
        else:
            self._counts[route] -= 1
