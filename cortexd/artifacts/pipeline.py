"""One Write stream's chunks appended in order while the stream keeps receiving.

The Write handler receives a chunk, checks it (offset, size bounds) and hands it to
:class:`AppendPipeline`; one writer task takes the chunks in arrival order and appends
each (sha256 update and the store's write, off the loop), so the next message comes
off the wire while the disk and the hash work on the last one. Before, each chunk's
write and hash were awaited before the next message was read, and their time added to
the wire time.

Guarantees:

- **Order**: one writer, FIFO; a chunk is appended only after every chunk before it
  was, so the partial stays a prefix of the blob and ``committed`` is the end of the
  last chunk the store accepted.
- **Bounded**: at most ``depth`` chunks wait in the queue (plus one being appended and
  the one the handler holds): ``put`` waits while the queue is full.
- **Failure**: the first failed append ends the pipeline: nothing queued after it is
  appended (the queue is emptied), ``committed`` stays where the store stands, and
  the failure is raised by the next ``put`` or by ``close``.
- **close** waits for every queued chunk to be appended (or the failure) and ends the
  writer; ``stop`` (the stream is ending anyway) appends nothing more than the chunk in
  progress, and waits for that one so no thread writes behind the next stream's back.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

Append = Callable[[int, bytes], Awaitable[int]]  # (offset, data) -> new committed end

DEPTH = 4  # chunks of 1 MiB: at most ~6 MiB per Write stream in memory


class AppendPipeline:
    def __init__(self, append: Append, committed: int, depth: int = DEPTH) -> None:
        self._append = append
        self.committed = committed       # the end of the last appended chunk
        self.accepted = committed        # the end of the last queued chunk
        self.error: BaseException | None = None
        self.write_s = 0.0               # the writer busy appending
        self.wait_s = 0.0                # the handler waiting for room in the queue
        self._stopping = False
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(depth)
        self._task = asyncio.create_task(self._run(), name="artifact-append")

    async def _run(self) -> None:
        try:
            while (item := await self._queue.get()) is not None and not self._stopping:
                offset, data = item
                started = time.monotonic()
                self.committed = await self._append(offset, data)
                self.write_s += time.monotonic() - started
        except BaseException as e:  # noqa: BLE001 - kept and raised to the handler
            self.error = e
        finally:
            self._drop_queued()

    def _drop_queued(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    async def put(self, offset: int, data: bytes) -> None:
        """Queue a chunk that starts at ``accepted`` (the caller checked it)."""
        assert offset == self.accepted, (offset, self.accepted)
        self._raise()
        started = time.monotonic()
        await self._queue.put((offset, data))
        self.wait_s += time.monotonic() - started
        if self._task.done():  # failed while we waited; the chunk is never appended
            self._drop_queued()
            self._raise()
        self.accepted = offset + len(data)

    async def close(self) -> int:
        """Wait until every queued chunk is appended; the committed end (or the failure)."""
        if not self._task.done():
            await self._queue.put(None)
            await asyncio.shield(self._task)
        self._raise()
        return self.committed

    async def stop(self) -> None:
        """End without appending what is queued; wait for the chunk in progress."""
        self._stopping = True
        self._drop_queued()
        if not self._task.done():
            self._queue.put_nowait(None)
            await asyncio.shield(self._task)
