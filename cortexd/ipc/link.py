"""One process's end of a ring pair, wired into its asyncio loop.

Each shard<->control channel is two :class:`Ring` s (one per direction) and two
FIFOs used only to wake a sleeping reader: the producer writes one byte to the
consumer's FIFO after it published records (coalesced to one write per loop
iteration), and the consumer writes one byte to the producer's FIFO when it
freed space in a ring whose producer said it was waiting. A reader always
empties its FIFO *before* draining the ring, so a record published between the
two cannot be missed. Both FIFO ends are opened O_RDWR, so neither side ever
blocks opening them or sees EOF when the peer restarts.
"""

import asyncio
import contextlib
import os
from pathlib import Path

from cortexd.ipc.ring import Ring

#: Records returned by one recv() call.
DRAIN_BATCH = 512


def make_fifo(path: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path, 0o600)


def open_fifo(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


class RingLink:
    def __init__(
        self,
        tx: Ring,
        rx: Ring,
        wake_in: Path,
        wake_out: Path,
    ) -> None:
        self.tx, self.rx = tx, rx
        self._wake_in = open_fifo(wake_in)
        self._wake_out = open_fifo(wake_out)
        self._readable = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poke_pending = False
        self._space = asyncio.Event()
        self.records_in = 0
        self.records_out = 0
        self.full_waits = 0  # sends that found the ring full and waited (back-pressure)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._wake_in, self._on_wake)
        self._readable.set()  # records published before we started

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._wake_in)
        os.close(self._wake_in)
        os.close(self._wake_out)

    # -- sending ------------------------------------------------------------

    def send_nowait(self, record: bytes) -> bool:
        if not self.tx.push(record):
            return False
        self.records_out += 1
        self._schedule_poke()
        return True

    async def send(self, record: bytes) -> None:
        """Send, waiting for space while the ring is full (back-pressure)."""
        if self.send_nowait(record):
            return
        self.full_waits += 1
        while not self.send_nowait(record):
            self._space.clear()
            self.tx.set_producer_waiting(True)
            if self.send_nowait(record):  # the consumer drained between the checks
                self.tx.set_producer_waiting(False)
                return
            self._poke()  # make sure the consumer is awake to drain
            await self._space.wait()

    def _schedule_poke(self) -> None:
        if not self._poke_pending and self._loop is not None:
            self._poke_pending = True
            self._loop.call_soon(self._poke)

    def _poke(self) -> None:
        self._poke_pending = False
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_out, b"\x01")

    # -- receiving ----------------------------------------------------------

    def _on_wake(self) -> None:
        try:
            while os.read(self._wake_in, 4096):
                pass
        except BlockingIOError:
            pass
        self._space.set()  # the peer may have freed space in our tx ring
        self._readable.set()

    async def recv(self) -> list[bytes]:
        """Wait for records and return up to DRAIN_BATCH of them, oldest first.

        The ring is the queue: a consumer that is slow to call ``recv`` leaves the
        records in shared memory, and a producer facing a full ring waits.
        """
        while True:
            records: list[bytes] = []
            while len(records) < DRAIN_BATCH:
                record = self.rx.pop()
                if record is None:
                    break
                records.append(record)
            if self.rx.take_producer_waiting():
                self._poke()
            if records:
                self.records_in += len(records)
                return records
            self._readable.clear()
            if self.rx.used_bytes:  # published between pop() and clear()
                continue
            await self._readable.wait()
