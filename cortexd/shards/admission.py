"""Attach admission: how many node attaches a shard lets through, and when the rest retry.

DESIGN §3: "the hub admits re-registration at a rate it can absorb and tells the rest
when to retry". Pure: the caller passes the clock and the number of attaches it has
in flight; the random source is injectable.

- **Rate.** A token bucket: ``rate_per_s`` attaches per second, at most ``burst`` at
  once. A hub host's ``admit_per_s`` is split evenly over its shards (the kernel's
  SO_REUSEPORT hash spreads connections evenly), so no shard asks another.
- **In flight.** At most ``max_pending`` attaches handed to the control process and not
  yet answered: when the store is slow the rate alone would still pile them up.
- **Retry schedule.** A refused node is given a time to come back, not an error. Each
  refusal reserves the next free slot on a virtual schedule that advances by
  ``1 / rate_per_s`` per refusal (the generic cell rate algorithm's "theoretical
  arrival time"), so the answers grow with how far over budget the shard is and the
  refused come back spread at about the rate the bucket refills — 10,000 nodes at
  once against 500/s are told 0–20 s, not all "1 s". The slot is jittered late only
  (up to +10 %: a node that comes back early finds no token and goes to the back of the
  schedule) and held between ``min_retry_s`` and ``max_retry_s`` (60 s, and at most
  half the hub's ``node_grace_s``: a node kept out past the grace would lose its running
  tasks); the node adds its own jitter (also late only, nodeagent/backoff.py).
- **What control really absorbs.** When the in-flight bound (or a Welcome that came
  too late) refuses, the rate is not what limits: the control process is behind. Then
  the schedule advances by ``1 / w`` where ``w`` is the rate at which Welcomes came
  back over the last second or more (:meth:`welcomed`), so the refused are told to come
  back when control can take them instead of at the nominal rate (measured: with a
  busy control process most refusals are of this kind).
"""

import random
from dataclasses import dataclass, field

REASON_RATE = "over the attach rate"
REASON_PENDING = "too many attaches in progress"
REASON_SLOW = "hub did not admit the node in time"
#: The schedule's step when the rate is unlimited and only the in-flight bound refuses,
#: before any Welcome was seen: about what one control process absorbs here
#: (docs/architecture.md).
UNLIMITED_STEP_S = 0.001
MIN_RETRY_S = 0.2
MAX_RETRY_S = 60.0
#: Welcomes per second below which the observed rate is not believed (a stall measured
#: over a short window must not push every answer to ``max_retry_s``).
MIN_OBSERVED_PER_S = 5.0


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after_ms: int
    reason: str


@dataclass(slots=True)
class AttachAdmission:
    rate_per_s: float  # 0 = unlimited
    burst: float
    max_pending: int  # 0 = unlimited
    min_retry_s: float = MIN_RETRY_S
    max_retry_s: float = MAX_RETRY_S
    rng: random.Random = field(default_factory=random.Random)
    tokens: float = 0.0
    stamp: float = 0.0
    horizon: float = 0.0  # the next free retry slot (the caller's clock)
    admitted: int = 0
    refused: int = 0
    welcomed_per_s: float = 0.0  # Welcomes per second over the last full window; 0 = none
    _window_start: float = 0.0
    _window_count: int = 0

    @classmethod
    def for_shard(cls, admit_per_s: float, max_pending_attaches: int, shards: int,
                  now: float, rng: random.Random | None = None,
                  node_grace_s: float | None = None) -> "AttachAdmission":
        """This shard's share of the host's budget; the bucket starts full.

        ``node_grace_s``: a node kept out longer than the hub's grace would find its
        running tasks given up (LOST, then killed when it is back), so no answer is
        longer than half of it."""
        rate = admit_per_s / shards
        pending = -(-max_pending_attaches // shards)  # ceil: never 0 when the host allows
        burst = max(1.0, rate)  # one second's worth
        max_retry_s = MAX_RETRY_S if node_grace_s is None else max(
            MIN_RETRY_S, min(MAX_RETRY_S, node_grace_s / 2))
        return cls(rate, burst, pending, max_retry_s=max_retry_s,
                   rng=rng or random.Random(), tokens=burst, stamp=now, horizon=now,
                   _window_start=now)

    def decide(self, now: float, pending: int) -> Refusal | None:
        """None: admit this attach (a token is taken). Otherwise when to come back."""
        if self.max_pending and pending >= self.max_pending:
            return self.refuse(now, REASON_PENDING)
        if not self.rate_per_s:
            self.admitted += 1
            return None
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_s)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.admitted += 1
            return None
        return self.refuse(now, REASON_RATE)

    def welcomed(self, now: float) -> None:
        """An admitted attach got its Welcome: measure how fast control answers."""
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self.welcomed_per_s = self._window_count / elapsed
            self._window_start, self._window_count = now, 0
        self._window_count += 1

    def _step(self, reason: str) -> float:
        """Seconds between two retry slots: the rate, or what control absorbs when it is
        the control process that is behind."""
        rate = self.rate_per_s or 1.0 / UNLIMITED_STEP_S
        if reason != REASON_RATE and self.welcomed_per_s:
            rate = min(rate, max(self.welcomed_per_s, MIN_OBSERVED_PER_S))
        return 1.0 / rate

    def refuse(self, now: float, reason: str) -> Refusal:
        """Refuse an attach (for ``reason``) and give it the next slot on the schedule."""
        self.refused += 1
        step = self._step(reason)
        self.horizon = min(max(self.horizon, now) + step, now + self.max_retry_s)
        wait = (self.horizon - now) * self.rng.uniform(1.0, 1.1)
        wait = min(max(wait, self.min_retry_s), self.max_retry_s)
        return Refusal(int(wait * 1000), reason)
