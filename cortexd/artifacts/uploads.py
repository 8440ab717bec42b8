"""The uploads in progress on this hub: who writes which partial, with what hash state.

Bounds (all refused with RESOURCE_EXHAUSTED, nothing of the refused request kept):
at most ``per_client`` concurrent Write streams per principal, and at most
``max_partial_bytes`` held in partial uploads on this hub altogether.

One writer per partial: a new Write stream for a partial supersedes the old one (its
client crashed or reconnected; the old stream may linger until its idle timeout), so
the old stream's next chunk is refused with ABORTED. A partial's appends run under its
lock, so offsets and the running sha256 advance together. The hash state is memory
only: after a hub restart the first stream of a partial re-reads the committed bytes
once (flat memory) to rebuild it.
"""

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cortexd.artifacts.rules import ArtifactError

Key = tuple[str, str]  # (owner, sha256)


@dataclass(slots=True)
class LiveUpload:
    generation: int = 0
    hasher: Any = None            # hashlib sha256 of the first `hashed` bytes, or None
    hashed: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writers: int = 0


class Uploads:
    def __init__(self, per_client: int, max_partial_bytes: int) -> None:
        self.per_client = per_client
        self.max_partial_bytes = max_partial_bytes
        self.partial_bytes = 0      # on this hub's partials (counted at open, then kept)
        self._live: dict[Key, LiveUpload] = {}
        self._streams: Counter[str] = Counter()
        # Taken by finish and by gc's blob deletion: a collection never deletes a blob
        # a finishing upload just found present.
        self.finish_lock = asyncio.Lock()

    def enter(self, principal: str) -> None:
        if self._streams[principal] >= self.per_client:
            raise ArtifactError("RESOURCE_EXHAUSTED",
                                f"{principal!r} already has {self.per_client} uploads in "
                                "progress (the limit)")
        self._streams[principal] += 1

    def leave(self, principal: str) -> None:
        self._streams[principal] -= 1
        if self._streams[principal] <= 0:
            del self._streams[principal]

    def attach(self, key: Key) -> tuple[LiveUpload, int]:
        """Become the partial's writer; (its state, this writer's generation)."""
        live = self._live.setdefault(key, LiveUpload())
        live.generation += 1
        live.writers += 1
        return live, live.generation

    def detach(self, key: Key) -> None:
        live = self._live.get(key)
        if live is not None:
            live.writers -= 1
            if live.writers <= 0:
                del self._live[key]

    def is_live(self, key: Key) -> bool:
        return key in self._live

    def reserve(self, n: int) -> None:
        if self.partial_bytes + n > self.max_partial_bytes:
            raise ArtifactError("RESOURCE_EXHAUSTED",
                                f"the hub holds {self.partial_bytes} bytes of unfinished "
                                f"uploads (limit {self.max_partial_bytes}); retry later")
        self.partial_bytes += n

    def release(self, n: int) -> None:
        self.partial_bytes = max(0, self.partial_bytes - n)


def new_hasher() -> Any:
    return hashlib.sha256()
