"""Which hub to dial next, and after how long (docs/protocol.md, "Connecting").

A node may be given several hub addresses (``--node-port A,B,C``): the hubs of one cluster
share the store and the signing key, so any of them can take the node. Pure: the
caller reports how each session ended and gets back the next address and the delay.

Policy, and why:

- **Order.** Each node shuffles the list once (its own random order) and then goes
  round robin. A fleet started with the same list is spread over the hubs, and when one
  hub dies its nodes fail over to *different* next hubs instead of all to the one after
  it in the list.
- **A session that ends moves on.** A failed dial, ``UNAVAILABLE``, a timeout, or a
  stream that ends (with or without a ``Welcome``) moves to the next address.
- **Immediate only after a hub that never took us.** Trying the next address at once is
  allowed only when the one just left did not welcome us in this attempt: a dead address
  costs one fast failure, not a delay. After a session that was welcomed, the jittered
  backoff applies first — when a hub with 10,000 nodes dies, they must not land on the
  next hub in the same millisecond.
- **Backoff per full rotation.** The exponential, jittered backoff (``Backoff``) counts
  rotations: after every address failed once in a row, the delay grows. With one address
  this is exactly the single-hub behaviour.
- **``RetryLater`` stays.** The hub is alive and gave us a time to come back (its
  admission control): we wait that long (plus jitter) and dial the same hub again.
- **Bad credentials** move on like a dead address (another hub may know the token);
  a rotation in which a hub refused the credentials ends with a wait near the backoff
  cap (an operator may fix the token table; retrying sooner would not).
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass

from cortex.errors import ConfigError
from cortex.tls import split_host_port
from nodeagent.backoff import Backoff


def parse_hub_list(text: str) -> tuple[str, ...]:
    """``HOST:PORT[,HOST:PORT…]`` → the addresses, each validated; duplicates refused."""
    addresses = tuple(part.strip() for part in text.split(","))
    if not addresses or any(not a for a in addresses):
        raise ConfigError(f"--node-port {text!r}: expected HOST:PORT[,HOST:PORT…] with no empty "
                          "entry")
    for address in addresses:
        _, port = split_host_port(address)
        if not 1 <= port <= 65535:
            raise ConfigError(f"--node-port address {address!r}: port must be 1..65535")
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"--node-port {text!r} names an address twice")
    return addresses


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one session ended, as far as choosing the next hub is concerned."""

    welcomed_for_s: float | None = None  # None: the hub never welcomed us
    retry_after_s: float | None = None  # the hub's RetryLater
    auth_failed: bool = False


class HubRotation:
    def __init__(self, addresses: Sequence[str], backoff: Backoff,
                 rng: random.Random | None = None) -> None:
        if not addresses:
            raise ValueError("at least one hub address")
        rng = rng or random.Random()
        self.order = list(addresses)
        rng.shuffle(self.order)
        self.backoff = backoff
        self._index = 0
        self._failed_in_row = 0  # unwelcomed attempts since the last welcome or RetryLater
        self._auth_failed = False  # a hub refused our credentials in this rotation

    @property
    def current(self) -> str:
        return self.order[self._index]

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self.order)

    def next_delay(self, outcome: Outcome) -> float:
        """Record how the session at :attr:`current` ended; move on if it should; return
        how long to wait before dialling :attr:`current` again."""
        b = self.backoff
        if outcome.retry_after_s is not None:
            # The hub answered: it is alive, and it said when. Stay with it.
            b.session_ended(outcome.welcomed_for_s)
            b.retry_after(outcome.retry_after_s)
            self._failed_in_row = 0
            self._auth_failed = False
            return b.next_delay()
        self._advance()
        if outcome.welcomed_for_s is not None and not outcome.auth_failed:
            b.session_ended(outcome.welcomed_for_s)
            self._failed_in_row = 0
            self._auth_failed = False
            return b.next_delay()
        self._failed_in_row += 1
        self._auth_failed |= outcome.auth_failed
        if self._failed_in_row < len(self.order):
            return 0.0  # that hub never took us: try the next one now
        self._failed_in_row = 0
        b.session_ended(None)
        if self._auth_failed:
            self._auth_failed = False
            return b.at_cap()
        return b.next_delay()
