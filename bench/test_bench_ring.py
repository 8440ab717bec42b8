"""Ring throughput: in one process, and across two processes against a socketpair.

In one process a round pushes a burst of records and pops them all, so it
measures ``Ring.push`` + ``Ring.pop`` alone (no wake-ups, no syscalls).

Across processes a round is one transfer of ``count`` records from a spawned
producer to this process (see :mod:`bench.peers`); process start-up is in the
round's setup and not timed. ``ring`` sends in a tight loop; ``ring-yield``
gives the producer's loop a turn every ``RING_YIELD_EVERY`` records, as a shard
serving gRPC streams does, so the coalesced wake-up reaches the consumer while
the ring still has room. The same records go through a Unix socketpair, one
write per record (``socket``) and coalesced into 64 KiB writes
(``socket-coalesced``), to show what the rings buy.
"""

import asyncio
import multiprocessing
import socket
from collections.abc import Callable
from typing import Any

import pytest

from bench import peers
from cortexd.ipc.ring import Ring

CAPACITY = 8 << 20  # Settings.ring_capacity_bytes default
SIZES = {"64B": 64, "1KiB": 1024, "64KiB": 64 << 10}
# Records per cross-process transfer: about 0.1-0.4 s per round on the 2-core dev machine.
TRANSFER_COUNTS = {64: 200_000, 1024: 120_000, 64 << 10: 4_000}
TRANSFER_ROUNDS = 5
COALESCE_BYTES = 64 << 10
RING_YIELD_EVERY = 16


@pytest.fixture
def ring() -> Any:
    path = peers.shm_path("ring")
    r = Ring(path, create=True, capacity=CAPACITY)
    yield r
    r.close()
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("label", list(SIZES))
def test_ring_in_process(benchmark, ring: Ring, label: str) -> None:
    size = SIZES[label]
    burst = min(1024, (CAPACITY // 2) // (size + 4))
    record = bytes(size)

    def push_pop() -> None:
        push, pop = ring.push, ring.pop
        for _ in range(burst):
            push(record)
        for _ in range(burst):
            pop()

    benchmark.group = "ring in one process"
    benchmark(push_pop)
    assert ring.used_bytes == 0
    benchmark.extra_info.update(kind="ring_in_process", transport="ring", record_bytes=size,
                                records_per_round=burst)


class Transfer:
    """Setup, timed body and teardown of one cross-process round, for ``pedantic``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: str, size: int,
                 count: int) -> None:
        self.loop, self.transport, self.size, self.count = loop, transport, size, count
        self.ctx = multiprocessing.get_context("spawn")
        self.cleanup: list[Callable[[], None]] = []

    def setup(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        parent_conn, child_conn = self.ctx.Pipe()
        if self.transport.startswith("ring"):
            pair, rings = peers.RingPair.create(CAPACITY)
            target: Any = peers.ring_producer
            yield_every = RING_YIELD_EVERY if self.transport == "ring-yield" else 0
            args: tuple[Any, ...] = (pair, self.size, self.count, yield_every, child_conn)
            link = pair.consumer_link()
            link.start(self.loop)
            body = peers.consume_ring(link, self.count)
            self.cleanup += [*(r.close for r in rings), link.tx.close, link.rx.close,
                             link.close, pair.unlink]
        else:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            coalesce = COALESCE_BYTES if self.transport == "socket-coalesced" else 0
            target = peers.socket_producer
            args = (theirs, self.size, self.count, coalesce, child_conn)
            body = peers.consume_socket(mine, self.count)
            self.cleanup += [theirs.close, mine.close]
        proc = self.ctx.Process(target=target, args=args, name="bench-producer", daemon=True)
        proc.start()
        child_conn.close()
        if parent_conn.recv_bytes() != b"ready":
            raise RuntimeError("producer did not start")
        self.cleanup.insert(0, lambda: _join(proc))
        return (parent_conn, body), {}

    def run(self, conn: Any, body: Any) -> None:
        conn.send_bytes(b"go")
        nbytes = self.loop.run_until_complete(body)
        assert nbytes == self.count * self.size

    def teardown(self, conn: Any, body: Any) -> None:
        conn.close()
        for step in self.cleanup:
            step()
        self.cleanup.clear()


def _join(proc: multiprocessing.process.BaseProcess) -> None:
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"producer exited with {proc.exitcode}")


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.parametrize("transport", ["ring", "ring-yield", "socket", "socket-coalesced"])
def test_cross_process(benchmark, loop: asyncio.AbstractEventLoop, transport: str,
                       label: str) -> None:
    size = SIZES[label]
    count = TRANSFER_COUNTS[size]
    t = Transfer(loop, transport, size, count)
    benchmark.group = f"two processes {label}"
    benchmark.pedantic(t.run, setup=t.setup, teardown=t.teardown, rounds=TRANSFER_ROUNDS)
    benchmark.extra_info.update(kind="cross_process", transport=transport, record_bytes=size,
                                records_per_round=count,
                                yield_every=RING_YIELD_EVERY if transport == "ring-yield" else 0,
                                coalesce_bytes=COALESCE_BYTES
                                if transport == "socket-coalesced" else 0)
