"""The shared-memory ring: order, wrap-around, back-pressure, limits, across processes."""

import multiprocessing
import os
from pathlib import Path

import pytest

from cortexd.ipc.ring import HEADER_BYTES, RecordTooLarge, Ring, RingError


@pytest.fixture
def ring_path(tmp_path: Path) -> Path:
    return tmp_path / "r.ring"


def test_records_come_out_in_order_and_intact(ring_path: Path) -> None:
    ring = Ring(ring_path, create=True, capacity=4096)
    peer = Ring(ring_path)
    for i in range(10):
        assert ring.push(b"rec-%d" % i)
    assert [peer.pop() for _ in range(10)] == [b"rec-%d" % i for i in range(10)]
    assert peer.pop() is None
    assert ring.used_bytes == 0
    ring.close()
    peer.close()


def test_full_ring_refuses_and_recovers_after_a_pop(ring_path: Path) -> None:
    ring = Ring(ring_path, create=True, capacity=4096)
    record = b"x" * 1000
    pushed = 0
    while ring.push(record):
        pushed += 1
    assert pushed == 4  # 4 * 1004 bytes fit in 4096, a fifth does not
    assert ring.pop() == record
    assert ring.push(record)  # space came back
    ring.close()


def test_wrap_around_many_times_with_odd_sizes(ring_path: Path) -> None:
    ring = Ring(ring_path, create=True, capacity=4096)
    sent = []
    got = []
    for i in range(5000):
        rec = os.urandom(1 + (i * 37) % 1500)
        while not ring.push(rec):
            item = ring.pop()
            assert item is not None
            got.append(item)
        sent.append(rec)
    while (item := ring.pop()) is not None:
        got.append(item)
    assert got == sent
    ring.close()


def test_record_limits_and_bad_files(ring_path: Path, tmp_path: Path) -> None:
    ring = Ring(ring_path, create=True, capacity=4096)
    with pytest.raises(RecordTooLarge):
        ring.push(b"x" * (2048 + 1))
    assert ring.push(b"")  # an empty record is still a record
    assert ring.pop() == b""
    ring.close()
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"\0" * (HEADER_BYTES + 4096))
    with pytest.raises(RingError, match="not a version-1 cortex ring"):
        Ring(bogus)
    with pytest.raises(RingError, match="cannot open"):
        Ring(tmp_path / "missing")


def test_producer_waiting_flag_and_heartbeats(ring_path: Path) -> None:
    ring = Ring(ring_path, create=True, capacity=4096)
    peer = Ring(ring_path)
    assert not peer.take_producer_waiting()
    ring.set_producer_waiting(True)
    assert peer.take_producer_waiting()
    assert not peer.take_producer_waiting()  # taking clears it
    before = peer.producer_heartbeat
    ring.beat_producer()
    assert peer.producer_heartbeat == before + 1
    ring.close()
    peer.close()


def _produce(path: str, count: int) -> None:
    ring = Ring(Path(path))
    for i in range(count):
        rec = i.to_bytes(4, "little") * (1 + i % 50)
        while not ring.push(rec):
            pass
    ring.close()


def test_across_processes_nothing_lost_or_reordered(ring_path: Path) -> None:
    ring = Ring(ring_path, create=True, capacity=16384)
    count = 20_000
    proc = multiprocessing.get_context("spawn").Process(target=_produce,
                                                        args=(str(ring_path), count))
    proc.start()
    i = 0
    while i < count:
        rec = ring.pop()
        if rec is None:
            assert proc.is_alive() or ring.used_bytes, f"producer died after {i} records"
            continue
        assert rec == i.to_bytes(4, "little") * (1 + i % 50)
        i += 1
    proc.join(10)
    assert proc.exitcode == 0
    assert ring.pop() is None
    ring.close()
