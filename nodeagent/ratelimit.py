"""A token bucket in bytes: how much of a task's output the live stream may send now.

Pure: the caller passes the clock. ``rate_bytes_s`` tokens are added per second up to
``burst_bytes``; sending ``n`` bytes takes ``n`` tokens. A rate of 0 means unlimited.
Invariants:

- Tokens never exceed the burst and never go below zero: over any interval ``t`` the
  bucket lets through at most ``burst_bytes + rate_bytes_s * t`` bytes.
- The clock may stall but not go back: a smaller ``now`` adds nothing.
"""

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate_bytes_s: float
    burst_bytes: int
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate_bytes_s: float, burst_bytes: int, now: float) -> "TokenBucket":
        if rate_bytes_s < 0 or burst_bytes < 0 or (rate_bytes_s > 0 and burst_bytes == 0):
            raise ValueError("need rate >= 0 and, when limited, burst > 0")
        return cls(rate_bytes_s, burst_bytes, float(burst_bytes), now)

    @property
    def unlimited(self) -> bool:
        return self.rate_bytes_s == 0

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst_bytes),
                              self.tokens + (now - self.stamp) * self.rate_bytes_s)
            self.stamp = now

    def available(self, now: float) -> int:
        """Whole bytes that may be sent now (a very large number when unlimited)."""
        if self.unlimited:
            return 1 << 62
        self._refill(now)
        return int(self.tokens)

    def take(self, n: int, now: float) -> None:
        if self.unlimited:
            return
        self._refill(now)
        self.tokens = max(0.0, self.tokens - n)

    def wait_s(self, n: int, now: float) -> float:
        """Seconds until ``min(n, burst)`` bytes may be sent (0 when they may now)."""
        if self.unlimited:
            return 0.0
        self._refill(now)
        missing = min(n, self.burst_bytes) - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate_bytes_s
