"""The adaptive encoder (issue 9): inline for small batches, the process pool for large.

One scheduling pass dispatches what it placed: a lone task most of the time, up to
512 envelopes after a ``SubmitMany``. Measured (``bench/README.md``, "Signing"), the
pool costs the control process 138 µs per message at batch 1 against 25 µs inline,
but 14 µs at 16 and 4.5 µs at 256: below ``min_batch`` the batch is signed inline,
from it on it is cut into one chunk per worker and signed in the pool side by side,
off the control loop. The pool is started on the first large batch, so a hub that
never sees one never has the worker processes.
"""

import asyncio

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortexd.serializers.envelope import EnvelopeRequest, InlineEncoder, PoolEncoder

DEFAULT_MIN_BATCH = 16


class AdaptiveEncoder:
    def __init__(self, key: Ed25519PrivateKey, ttl_ms: int, workers: int,
                 min_batch: int = DEFAULT_MIN_BATCH) -> None:
        self._key, self._ttl_ms, self._workers = key, ttl_ms, max(1, workers)
        self._inline = InlineEncoder(key, ttl_ms)
        self._pool: PoolEncoder | None = None
        self.min_batch = min_batch
        self.inline_batches = 0
        self.pool_batches = 0

    async def encode(self, batch: list[EnvelopeRequest]) -> list[bytes]:
        if len(batch) < self.min_batch:
            self.inline_batches += 1
            return await self._inline.encode(batch)
        if self._pool is None:
            self._pool = PoolEncoder(self._key, self._ttl_ms, self._workers)
        self.pool_batches += 1
        size = -(-len(batch) // self._workers)
        chunks = [batch[i:i + size] for i in range(0, len(batch), size)]
        parts = await asyncio.gather(*(self._pool.encode(c) for c in chunks))
        return [frame for part in parts for frame in part]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
