"""The two ends of a cross-process transfer: a ring pair with wake FIFOs, or a socket.

The producer runs in a ``spawn`` process (as a cortexd shard does) and the
consumer in the benchmark's process; both run uvloop. A transfer is:
producer attaches and reports ``ready``; the parent starts its clock and says
``go``; the producer sends ``count`` records of ``size`` bytes; the parent stops
its clock when it has taken the last one as a ``bytes`` object.

- ring: :class:`cortexd.ipc.link.RingLink` on both sides, exactly as shards and
  the control process use it (``send`` with back-pressure, ``recv`` in batches).
- socket: one end of ``socket.socketpair()``, each record a u32 length prefix
  and its bytes, written through an asyncio stream and ``drain()``-ed after
  every write. With ``coalesce_bytes`` > 0 the producer appends records to a
  buffer and writes it once it holds that many bytes, as a careful socket
  protocol would; with 0, every record is its own write (and send syscall).

Caveat found with this benchmark: ``RingLink`` wakes the consumer from a
``call_soon`` callback, and ``await link.send()`` does not suspend while the ring
has room, so a producer in a tight loop wakes its consumer only when the ring
is full or the producer yields. Hence the ``yield_every`` variant.

The consumer of either kind splits records out of what it receives and makes a
``bytes`` per record, the same work ``Ring.pop`` does.
"""

import asyncio
import itertools
import os
import socket
import struct
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import uvloop

from cortexd.ipc.link import RingLink, make_fifo
from cortexd.ipc.ring import Ring

SHM_DIR = Path("/dev/shm")
_LEN = struct.Struct("<I")
_names = itertools.count()


def shm_path(kind: str) -> Path:
    # Not named cortex-PID-s*: cortexd's stale-segment sweep must never take ours.
    return SHM_DIR / f"cortexbench-{os.getpid()}-{next(_names)}.{kind}"


@dataclass(frozen=True, slots=True)
class RingPair:
    """One channel: data flows producer -> consumer; ``back`` carries only wake-ups."""

    data: Path
    back: Path
    data_wake: Path  # read by the consumer
    back_wake: Path  # read by the producer

    @classmethod
    def create(cls, capacity: int) -> tuple["RingPair", list[Ring]]:
        pair = cls(shm_path("ring"), shm_path("ring"), shm_path("wake"), shm_path("wake"))
        rings = [Ring(pair.data, create=True, capacity=capacity),
                 Ring(pair.back, create=True, capacity=capacity)]
        make_fifo(pair.data_wake)
        make_fifo(pair.back_wake)
        return pair, rings

    def unlink(self) -> None:
        for path in (self.data, self.back, self.data_wake, self.back_wake):
            path.unlink(missing_ok=True)

    def producer_link(self) -> RingLink:
        return RingLink(Ring(self.data), Ring(self.back), self.back_wake, self.data_wake)

    def consumer_link(self) -> RingLink:
        return RingLink(Ring(self.back), Ring(self.data), self.data_wake, self.back_wake)


def _handshake(conn: Connection) -> None:
    conn.send_bytes(b"ready")
    if conn.recv_bytes() != b"go":
        raise RuntimeError("benchmark parent did not say go")


def ring_producer(pair: RingPair, size: int, count: int, yield_every: int,
                  conn: Connection) -> None:
    """Entry point of the spawned producer process for the ring transfer.

    ``yield_every`` > 0 gives the loop a turn after that many records, as a
    shard does between gRPC messages; 0 is a tight loop that never yields while
    the ring has room.
    """

    async def run() -> None:
        link = pair.producer_link()
        link.start(asyncio.get_running_loop())
        record = os.urandom(size)
        _handshake(conn)
        for i in range(1, count + 1):
            await link.send(record)
            if yield_every and i % yield_every == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)  # let the coalesced wake-up write run
        link.close()
        link.tx.close()
        link.rx.close()

    uvloop.run(run())


def socket_producer(sock: socket.socket, size: int, count: int, coalesce_bytes: int,
                    conn: Connection) -> None:
    """Entry point of the spawned producer process for the socket transfer."""

    async def run() -> None:
        _, writer = await asyncio.open_unix_connection(sock=sock)
        record = os.urandom(size)
        header = _LEN.pack(size)
        buf = bytearray()
        _handshake(conn)
        for _ in range(count):
            buf += header
            buf += record
            if len(buf) >= coalesce_bytes:
                writer.write(buf)
                buf = bytearray()
                await writer.drain()
        if buf:
            writer.write(buf)
        writer.close()
        await writer.wait_closed()

    uvloop.run(run())


async def consume_ring(link: RingLink, count: int) -> int:
    got = nbytes = 0
    while got < count:
        records = await link.recv()
        got += len(records)
        nbytes += sum(map(len, records))
    return nbytes


async def consume_socket(sock: socket.socket, count: int) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    buf = bytearray()
    got = nbytes = 0
    while got < count:
        chunk = await reader.read(1 << 20)
        if not chunk:
            raise EOFError(f"producer closed after {got} of {count} records")
        buf += chunk
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if end - pos - 4 < size:
                break
            record = bytes(buf[pos + 4 : pos + 4 + size])
            nbytes += len(record)
            pos += 4 + size
            got += 1
        del buf[:pos]
    writer.close()
    return nbytes
