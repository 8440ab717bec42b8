"""The journal (cortexd/journal.py): first 10 KB, last 30 KB, the omitted range between."""

import os
import random

import pytest

from cortexd.journal import HEAD_BYTES, TAIL_BYTES, Journal, tail_range


def feed(data: bytes, chunk_sizes: list[int] | None = None) -> Journal:
    journal = Journal()
    offset = 0
    rng = random.Random(7)
    while offset < len(data):
        n = chunk_sizes.pop(0) if chunk_sizes else rng.randint(1, 9000)
        assert journal.append(offset, data[offset:offset + n])
        offset = min(len(data), offset + n)
    return journal


def expected(data: bytes) -> tuple[bytes, bytes, int, int]:
    head = data[:HEAD_BYTES]
    start = max(len(head), len(data) - TAIL_BYTES)
    return head, data[start:], len(head), start


@pytest.mark.parametrize("size", [0, 1, 9_999, 10_000, 10_001, 39_999, 40_000, 40_001,
                                  70_000, 1_000_000])
def test_head_tail_and_omitted_range(size):
    data = os.urandom(size)
    view = feed(data).view()
    head, tail, omitted_from, omitted_to = expected(data)
    assert (view.head, view.tail) == (head, tail)
    assert (view.omitted_from, view.omitted_to) == (omitted_from, omitted_to)
    assert view.total_bytes == size
    assert len(view.head) + view.omitted_bytes + len(view.tail) == size


def test_small_output_is_all_head():
    view = feed(b"hello\r\n").view()
    assert view.head == b"hello\r\n" and view.tail == b"" and view.omitted_bytes == 0
    assert view.marker() == ""


def test_exactly_40_kb_omits_nothing():
    data = bytes(range(256)) * 157  # 40_192: just over, then exactly 40_000
    view = feed(data[:40_000]).view()
    assert view.head + view.tail == data[:40_000] and view.omitted_bytes == 0
    view = feed(data).view()
    assert view.omitted_bytes == 192
    assert (view.omitted_from, view.omitted_to) == (10_000, 10_192)


def test_huge_output_marker_names_the_offsets():
    journal = Journal()
    block = b"x" * 65_536
    for i in range(160):  # 10 MiB in frames of 64 KiB
        assert journal.append(i * len(block), block)
    view = journal.view()
    total = 160 * 65_536
    assert len(view.head) == HEAD_BYTES and len(view.tail) == TAIL_BYTES
    assert view.omitted_bytes == total - 40_000
    assert view.marker() == (f"[… {total - 40_000} bytes omitted "
                             f"(offsets 10000–{total - 30_000}) …]")


def test_out_of_order_append_is_refused():
    journal = Journal()
    assert journal.append(0, b"abc")
    assert not journal.append(5, b"gap")
    assert not journal.append(1, b"overlap")
    assert journal.total == 3


@pytest.mark.parametrize("size", [0, 500, 10_000, 25_000, 40_000, 123_456])
def test_restore_from_head_and_tail_ranges_continues_identically(size):
    data = os.urandom(size)
    start, end = tail_range(size)
    restored = Journal.restore(size, data[:HEAD_BYTES], data[start:end])
    assert restored.view() == feed(data).view()
    more = os.urandom(50_000)
    assert restored.append(size, more)
    assert restored.view() == feed(data + more).view()


def test_restore_refuses_ranges_that_do_not_fit():
    with pytest.raises(ValueError):
        Journal.restore(50_000, b"x" * 10_000, b"y" * 10)


# -- the control process's cache: fed as output is stored, rebuilt from two ranges ----------

class FakeOutputStore:
    """Just ``read_output``, counting what it was asked to read."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.bytes_read = 0

    async def read_output(self, task_id: str, attempt: int, offset: int, max_bytes: int) -> bytes:
        chunk = bytes(self.data[offset:offset + max_bytes])
        self.bytes_read += len(chunk)
        return chunk


def test_cache_follows_the_store_and_rebuilds_from_head_and_tail_only():
    from cortexd.control.journals import JournalCache

    async def main() -> None:
        store = FakeOutputStore()
        cache = JournalCache(store)  # type: ignore[arg-type]
        for _ in range(100):  # 100 appends of 5 KB, as _on_output does after the store
            chunk = os.urandom(5_000)
            before = len(store.data)
            store.data += chunk
            await cache.appended("t-1", 1, before, chunk)
        assert cache.rebuilds == 0 and store.bytes_read == 0  # incremental, never re-read
        live = await cache.view("t-1", 1, len(store.data))
        assert live == feed(bytes(store.data)).view()

        restarted = JournalCache(store)  # type: ignore[arg-type]  # control restarted
        assert await restarted.view("t-1", 1, len(store.data)) == live
        assert store.bytes_read == HEAD_BYTES + TAIL_BYTES  # 40 KB, not 500 KB
        more = b"tail end\r\n"
        before = len(store.data)
        store.data += more
        await restarted.appended("t-1", 1, before, more)
        assert restarted.rebuilds == 1
        assert (await restarted.view("t-1", 1, len(store.data))).tail.endswith(more)

    import asyncio
    asyncio.run(main())
