"""Which finished spools the node keeps after the hub acknowledged them: pure policy.

After ``FinishedAck`` a spool is no longer needed for delivery (the hub holds every byte)
but is kept for ``cortexctl logs`` (docs/protocol.md, "Reading a spool") under two
limits: an age (``spool_retention_s`` since the task finished) and a total size
(``spool_retention_bytes`` over all retained spools). Invariants:

- Only retained spools — finished *and* acknowledged — are ever candidates. A running
  task's spool, or a finished one whose output or result the hub has not acknowledged,
  is never in this index, so no limit can discard bytes the hub does not have.
- Pruning takes whole spools, oldest finished first: first every spool past the age
  limit, then, while the total is over the size limit, the oldest of the rest.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TaskKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RetainedSpool:
    key: TaskKey
    path: Path
    size_bytes: int
    finished_at: float  # wall clock (the spool's meta), survives agent restarts


class RetainedSpools:
    def __init__(self, *, max_age_s: float, max_bytes: int) -> None:
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self._spools: dict[TaskKey, RetainedSpool] = {}
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._spools)

    def __iter__(self) -> Iterator[RetainedSpool]:
        return iter(list(self._spools.values()))

    def get(self, key: TaskKey) -> RetainedSpool | None:
        return self._spools.get(key)

    def add(self, spool: RetainedSpool) -> None:
        self.remove(spool.key)
        self._spools[spool.key] = spool
        self.total_bytes += spool.size_bytes

    def remove(self, key: TaskKey) -> RetainedSpool | None:
        spool = self._spools.pop(key, None)
        if spool is not None:
            self.total_bytes -= spool.size_bytes
        return spool

    def due(self, now: float) -> list[RetainedSpool]:
        """Remove and return the spools the limits no longer allow (oldest first)."""
        pruned: list[RetainedSpool] = []
        total = self.total_bytes
        for spool in sorted(self._spools.values(), key=lambda s: (s.finished_at, s.key)):
            if now - spool.finished_at > self.max_age_s or total > self.max_bytes:
                pruned.append(spool)
                total -= spool.size_bytes
        for spool in pruned:
            self.remove(spool.key)
        return pruned
