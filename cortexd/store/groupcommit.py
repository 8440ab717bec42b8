"""Group commit: many small conditional writes, one transaction per batch.

Callers ``submit`` a write and await its own result, so an acknowledgement built
on that result is sent only after the batch holding the write has committed.
One writer task takes up to ``max_batch`` queued writes, hands them to the
backend's ``flush`` (one transaction, in submission order) and resolves each
caller's future with its value or its exception (a :class:`StaleWrite` is a
result, not a batch failure).

Batching comes from two places: writes that queue while a flush is in flight
form the next batch (no added latency), and ``delay_s`` optionally holds a
not-yet-full batch open that long after its first write (a commit delay). The
queue is bounded by ``max_pending``: a full queue makes ``submit`` wait
(back-pressure). If a whole batch fails (not a per-write refusal), each of its
writes is retried alone so one bad write cannot fail its neighbours. The batch
may have committed before it failed (an error after COMMIT); the backends'
writes carry write ids (``rows.py``), so a write retried here returns its
committed result instead of being refused as stale or applied twice. A
backend that rides out outages (PostgreSQL) retries a transient failure of the
whole batch itself, inside ``flush``; this path sees only the rest. ``close``
stops intake and flushes what is queued.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from cortexd.store.base import StoreError

Op = TypeVar("Op")
Res = TypeVar("Res")

Flush = Callable[[Sequence[Op]], Awaitable[Sequence[Res | Exception]]]


class GroupCommit(Generic[Op, Res]):
    def __init__(self, flush: Flush[Op, Res], *, max_batch: int = 512, delay_s: float = 0.0,
                 max_pending: int = 8192) -> None:
        if max_batch < 1 or max_pending < max_batch:
            raise ValueError("need 1 <= max_batch <= max_pending")
        self._flush = flush
        self.max_batch = max_batch
        self.delay_s = delay_s
        self._queue: deque[tuple[Op, asyncio.Future[Res]]] = deque()
        self._room = asyncio.Semaphore(max_pending)
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        self.writes = 0
        #: Metrics hook: (writes in the batch, seconds from flush to results).
        self.on_commit: Callable[[int, float], None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(self, op: Op) -> Res:
        if self._closed or self._task is None:
            raise StoreError("store is closed")
        async with self._room:
            fut: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
            self._queue.append((op, fut))
            self._wake.set()
            if len(self._queue) >= self.max_batch:
                self._full.set()
            return await fut

    async def close(self) -> None:
        """Stop taking writes; return once every queued write is committed."""
        self._closed = True
        self._wake.set()
        self._full.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.delay_s > 0 and len(self._queue) < self.max_batch and not self._closed:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.delay_s)
            n = min(self.max_batch, len(self._queue))
            await self._commit([self._queue.popleft() for _ in range(n)])

    async def _commit(self, batch: list[tuple[Op, "asyncio.Future[Res]"]]) -> None:
        ops = [op for op, _ in batch]
        results: list[Res | Exception]
        started = time.perf_counter()
        try:
            results = list(await self._flush(ops))
        except Exception:  # the whole batch failed: retry each write alone (once)
            results = []
            for op in ops:
                try:
                    results.extend(await self._flush([op]))
                except Exception as one:
                    results.append(one)
        self.batches += 1
        self.writes += len(ops)
        if self.on_commit is not None:
            with contextlib.suppress(Exception):  # a metrics hook never fails a write
                self.on_commit(len(ops), time.perf_counter() - started)
        for (_, fut), res in zip(batch, results, strict=True):
            if fut.done():  # the caller was cancelled; the write stands
                continue
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)
