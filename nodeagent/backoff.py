"""Jittered exponential reconnect backoff (docs/protocol.md, "Connecting").

``delay = uniform(0, min(cap, base * 2**n))`` ("full jitter"), where ``n`` counts failed
attempts since the last good session; a session that lasted ``reset_after_s`` or more
resets ``n``. A hub's ``RetryLater`` overrides the next delay (plus up to 20 % jitter, so
a fleet told the same number does not come back in one burst). Pure: the clock is the
caller's and the random source is injectable.
"""

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    base_s: float
    cap_s: float
    reset_after_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    _retry_after_s: float | None = None

    def session_ended(self, lasted_s: float | None) -> None:
        """Record the end of an attempt; ``lasted_s`` is None when no session was set up."""
        if lasted_s is not None and lasted_s >= self.reset_after_s:
            self.failures = 0
        else:
            self.failures += 1

    def retry_after(self, delay_s: float) -> None:
        """The hub asked us to come back after ``delay_s`` (``RetryLater``)."""
        self._retry_after_s = max(0.0, delay_s)

    def at_cap(self) -> float:
        """A delay near the cap, for errors a retry soon will not fix (bad credentials)."""
        return self.cap_s * self.rng.uniform(0.9, 1.0)

    def next_delay(self) -> float:
        if self._retry_after_s is not None:
            delay, self._retry_after_s = self._retry_after_s, None
            return delay * self.rng.uniform(1.0, 1.2)
        # Even after a good session the delay is jittered: a hub restart must not bring
        # the whole fleet back in the same millisecond.
        exponent = min(max(self.failures - 1, 0), 62)
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0**exponent))
