"""A task attempt's journal: the monitor's bounded view of its output (DESIGN.md §5).

The journal holds the first ``head_bytes`` (10 KB) and the last ``tail_bytes`` (30 KB) of
an attempt's output and says exactly what lies between: ``omitted_bytes`` at spool
offsets ``[omitted_from, omitted_to)``. Pure: bytes in, a view out; no I/O.

Invariants:

- It is maintained incrementally: :meth:`Journal.append` costs O(len(data)) amortised
  (the tail buffer is trimmed only when it has grown to twice its bound), whatever the
  total. Nothing is ever recomputed from the whole output.
- Appends are in order: ``append(offset, data)`` needs ``offset == total``; anything else
  is refused with ``False`` (the caller rebuilds from the store, see :meth:`restore`).
- ``head + omitted + tail == total`` and head and tail never overlap: with
  ``total <= head_bytes + tail_bytes`` nothing is omitted and ``tail`` is exactly the
  bytes after the head.
- :meth:`restore` rebuilds an identical journal from only two ranges of the output
  (``[0, head_bytes)`` and the last ``tail_bytes`` after the head): a control restart
  reads 40 KB per task, not the whole output.
"""

from dataclasses import dataclass

HEAD_BYTES = 10_000
TAIL_BYTES = 30_000


@dataclass(frozen=True, slots=True)
class JournalView:
    head: bytes
    tail: bytes
    total_bytes: int
    omitted_from: int  # spool offsets of the omitted range [from, to); equal when none
    omitted_to: int

    @property
    def omitted_bytes(self) -> int:
        return self.omitted_to - self.omitted_from

    def marker(self) -> str:
        """The line a reader sees between head and tail (empty when nothing is omitted)."""
        if not self.omitted_bytes:
            return ""
        return (f"[… {self.omitted_bytes} bytes omitted "
                f"(offsets {self.omitted_from}–{self.omitted_to}) …]")


def tail_range(total: int, head_bytes: int = HEAD_BYTES,
               tail_bytes: int = TAIL_BYTES) -> tuple[int, int]:
    """The offsets ``[start, end)`` of the tail for an output of ``total`` bytes."""
    start = max(min(total, head_bytes), total - tail_bytes)
    return start, total


class Journal:
    def __init__(self, head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES) -> None:
        if head_bytes < 0 or tail_bytes <= 0:
            raise ValueError("need head_bytes >= 0 and tail_bytes > 0")
        self.head_bytes = head_bytes
        self.tail_bytes = tail_bytes
        self._head = bytearray()
        self._tail = bytearray()  # the output from offset _tail_start to total
        self._tail_start = head_bytes
        self.total = 0

    def append(self, offset: int, data: bytes) -> bool:
        """Add ``data`` found at ``offset``; False (nothing changed) unless it is in order."""
        if offset != self.total:
            return False
        view = memoryview(data)
        room = self.head_bytes - len(self._head)
        if room > 0:
            self._head += view[:room]
            view = view[room:]
        if view:
            self._tail += view
            excess = len(self._tail) - self.tail_bytes
            if excess >= self.tail_bytes:  # amortised: trim at 2x, never per append
                del self._tail[:excess]
                self._tail_start += excess
        self.total += len(data)
        return True

    def view(self) -> JournalView:
        start, end = tail_range(self.total, self.head_bytes, self.tail_bytes)
        tail = bytes(self._tail[start - self._tail_start:]) if end > start else b""
        head_end = len(self._head)
        return JournalView(head=bytes(self._head), tail=tail, total_bytes=self.total,
                           omitted_from=head_end, omitted_to=max(head_end, start))

    @classmethod
    def restore(cls, total: int, head: bytes, tail: bytes, head_bytes: int = HEAD_BYTES,
                tail_bytes: int = TAIL_BYTES) -> "Journal":
        """The journal of an output of ``total`` bytes whose first ``len(head)`` bytes are
        ``head`` and whose tail range (:func:`tail_range`) holds ``tail``."""
        start, end = tail_range(total, head_bytes, tail_bytes)
        if len(head) != min(total, head_bytes) or len(tail) != end - start:
            raise ValueError(f"restore: head {len(head)} / tail {len(tail)} bytes do not fit "
                             f"an output of {total} bytes")
        journal = cls(head_bytes, tail_bytes)
        journal._head += head
        journal._tail += tail
        journal._tail_start = max(start, head_bytes)  # the tail buffer begins after the head
        journal.total = total
        return journal
