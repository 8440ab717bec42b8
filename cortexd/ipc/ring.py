"""A single-producer/single-consumer ring of byte records in shared memory.

Layout of the mapped file (little-endian)::

    0  magic    u32 'CXRG'        8  capacity  u64 (size of the data area)
    4  version  u32              16  head      u64 (consumer position, monotonic)
                                 24  tail      u64 (producer position, monotonic)
                                 32  producer_heartbeat u64
                                 40  consumer_heartbeat u64
                                 48  producer_waiting   u64 (1 = blocked on a full ring)
    64 data[capacity]

A record is a u32 length followed by its bytes. A record never wraps: when the
space left before the end of the data area is too small, the producer writes a
wrap marker (length 0xFFFFFFFF, or nothing when fewer than 4 bytes are left) and
starts again at offset 0.

Invariants: only the producer writes ``tail``, only the consumer writes
``head``; the producer publishes a record by storing ``tail`` after the record's
bytes. Each position is one aligned 8-byte store through ctypes, which is atomic
on x86-64 and AArch64; the store order (data before tail) relies on x86-64 TSO —
on a weakly ordered CPU a fence would be needed here. A producer that dies
mid-record never advanced ``tail``, so a half-written record is never seen.

The mapping is a file under /dev/shm created by the supervisor, which also
unlinks it. We map the file ourselves instead of using
``multiprocessing.shared_memory`` because on Python < 3.13 merely attaching to a
segment registers it with the resource tracker, which then unlinks it when any
child exits (CPython gh-82300).
"""

import ctypes
import mmap
import os
import struct
from pathlib import Path

from cortex.errors import CortexError

MAGIC = 0x47525843  # b"CXRG" little-endian
VERSION = 1
HEADER_BYTES = 64
WRAP = 0xFFFFFFFF
_LEN = struct.Struct("<I")


class RingError(CortexError):
    """The ring file is missing, corrupt or of another version."""


class RecordTooLarge(RingError):
    """A record is larger than the ring allows (half its capacity)."""


class Ring:
    """One direction of a shard<->control channel; bytes in, bytes out, never pickle."""

    def __init__(self, path: Path, *, create: bool = False, capacity: int = 0) -> None:
        self.path = path
        if create:
            if capacity < 4096 or capacity % 8:
                raise RingError("ring capacity must be a multiple of 8 and at least 4096")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, HEADER_BYTES + capacity)
                self._mm = mmap.mmap(fd, HEADER_BYTES + capacity)
            finally:
                os.close(fd)
            struct.pack_into("<IIQ", self._mm, 0, MAGIC, VERSION, capacity)
        else:
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError as e:
                raise RingError(f"cannot open ring {path}: {e.strerror}") from e
            try:
                self._mm = mmap.mmap(fd, 0)
            finally:
                os.close(fd)
            magic, version, capacity = struct.unpack_from("<IIQ", self._mm, 0)
            if magic != MAGIC or version != VERSION:
                raise RingError(f"{path} is not a version-{VERSION} cortex ring")
        self.capacity = capacity
        self.max_record = capacity // 2
        self._head = ctypes.c_uint64.from_buffer(self._mm, 16)
        self._tail = ctypes.c_uint64.from_buffer(self._mm, 24)
        self._producer_hb = ctypes.c_uint64.from_buffer(self._mm, 32)
        self._consumer_hb = ctypes.c_uint64.from_buffer(self._mm, 40)
        self._waiting = ctypes.c_uint64.from_buffer(self._mm, 48)
        self._data = memoryview(self._mm)[HEADER_BYTES:]

    # -- producer side ------------------------------------------------------

    def push(self, record: bytes) -> bool:
        """Append one record; False when the ring is full (back-pressure)."""
        size = len(record)
        if size > self.max_record:
            raise RecordTooLarge(f"record of {size} bytes exceeds ring limit {self.max_record}")
        need = 4 + size
        cap = self.capacity
        tail = self._tail.value
        free = cap - (tail - self._head.value)
        idx = tail % cap
        room = cap - idx
        skip = room if room < need else 0
        if free < need + skip:
            return False
        if skip:
            if room >= 4:
                _LEN.pack_into(self._data, idx, WRAP)
            tail += skip
            idx = 0
        _LEN.pack_into(self._data, idx, size)
        self._data[idx + 4 : idx + need] = record
        self._tail.value = tail + need
        return True

    def set_producer_waiting(self, waiting: bool) -> None:
        self._waiting.value = 1 if waiting else 0

    def beat_producer(self) -> None:
        self._producer_hb.value += 1

    # -- consumer side ------------------------------------------------------

    def pop(self) -> bytes | None:
        """Take the oldest record, or None when the ring is empty."""
        cap = self.capacity
        head = self._head.value
        while head != self._tail.value:
            idx = head % cap
            room = cap - idx
            if room < 4:
                head += room
                continue
            (size,) = _LEN.unpack_from(self._data, idx)
            if size == WRAP:
                head += room
                continue
            record = bytes(self._data[idx + 4 : idx + 4 + size])
            self._head.value = head + 4 + size
            return record
        self._head.value = head
        return None

    def take_producer_waiting(self) -> bool:
        """True (and clears the flag) when the producer is blocked on a full ring."""
        if self._waiting.value:
            self._waiting.value = 0
            return True
        return False

    def beat_consumer(self) -> None:
        self._consumer_hb.value += 1

    # -- either side / observers --------------------------------------------

    @property
    def used_bytes(self) -> int:
        return int(self._tail.value - self._head.value)

    @property
    def producer_heartbeat(self) -> int:
        return int(self._producer_hb.value)

    @property
    def consumer_heartbeat(self) -> int:
        return int(self._consumer_hb.value)

    def close(self) -> None:
        # ctypes views export the buffer; drop them before closing the map.
        del self._head, self._tail, self._producer_hb, self._consumer_hb, self._waiting
        self._data.release()
        self._mm.close()
