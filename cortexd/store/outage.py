"""Riding out a store outage: retry transient errors with capped, jittered backoff.

A store call that fails with an error the backend calls transient (PostgreSQL:
connection lost or refused, server shutting down or starting up, no pooled
connection in time) is tried again after a delay that doubles from
``Backoff.initial_s`` up to ``Backoff.max_s``, drawn uniformly from the upper
half of that window so that many callers, and many hubs, do not retry in step.
The caller just waits: nothing it awaits is dropped, and the group-commit queue
in front of the writer stays bounded, so a long outage is back-pressure on the
node frames and Control calls behind it, never unbounded memory.

Invariants:

- One ``store_unavailable`` line when a call first fails, one ``store_recovered``
  line (the outage's duration, the retries it cost) when a call first succeeds
  after it: never one line per retry.
- A retried write may already have committed (its commit outcome was unknown);
  the writes are idempotent by write id (``rows.py``), so a retry finds what it
  wrote instead of applying or refusing it again.
- Retries end only when the store is closing: after :meth:`Outages.give_up_after`
  a call that still fails raises :class:`StoreUnavailable` at the deadline.
"""

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from cortex import logs
from cortexd.store.base import StoreError

T = TypeVar("T")


class StoreUnavailable(StoreError):
    """The store stayed unreachable until the caller could no longer wait (closing)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.05
    max_s: float = 2.0

    def delay_s(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before try ``failures + 1``: in [cap/2, cap], cap doubling to max_s."""
        cap = min(self.max_s, self.initial_s * 2.0 ** min(failures - 1, 32))
        return cap / 2 + rand() * cap / 2


class Outages:
    """Runs store calls through outages and keeps the figures about them."""

    def __init__(self, where: str, is_transient: Callable[[BaseException], bool],
                 backoff: Backoff = Backoff()) -> None:
        self.where = where
        self.is_transient = is_transient
        self.backoff = backoff
        self.reachable = True
        self.outages = 0  # outages seen since the store opened
        self.retries = 0  # calls tried again, over all outages
        self.last_outage_s = 0.0  # duration of the last outage that ended
        self._down_since = 0.0
        self._down_retries = 0
        self._deadline: float | None = None
        self.log = logs.get()

    def give_up_after(self, seconds: float) -> None:
        """Closing: calls that still fail this long from now raise StoreUnavailable."""
        self._deadline = time.monotonic() + seconds

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, again after each transient failure; its value or its error."""
        failures = 0
        while True:
            if (self._deadline is not None and not self.reachable
                    and time.monotonic() >= self._deadline):
                # Closing and still down: fail at once (a try could wait a pool timeout).
                raise StoreUnavailable(f"store {self.where} is unreachable and the store is "
                                       "closing")
            try:
                result = await fn()
            except Exception as e:
                if not self.is_transient(e):
                    raise
                failures += 1
                self._failed(what, e)
                wait_s = self.backoff.delay_s(failures)
                if self._deadline is not None:
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        raise StoreUnavailable(f"store {self.where} is unreachable and the "
                                               f"store is closing: {_text(e)}") from e
                    wait_s = min(wait_s, left)
                await asyncio.sleep(wait_s)
                continue
            if not self.reachable:
                self._recovered(what)
            return result

    def _failed(self, what: str, e: BaseException) -> None:
        self.retries += 1
        if not self.reachable:
            self._down_retries += 1
            return
        self.reachable = False
        self.outages += 1
        self._down_since = time.monotonic()
        self._down_retries = 1
        self.log.warning("store_unavailable", store=self.where, call=what, error=_text(e),
                         outage=self.outages)

    def _recovered(self, what: str) -> None:
        self.reachable = True
        self.last_outage_s = time.monotonic() - self._down_since
        self.log.info("store_recovered", store=self.where, call=what,
                      duration_s=round(self.last_outage_s, 3), retries=self._down_retries,
                      outage=self.outages)


def _text(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
