"""The control process's journals: one :class:`cortexd.journal.Journal` per task attempt
whose output is arriving, kept up to date as the output is stored.

Invariants:

- A journal is only ever fed bytes the store has just made durable, in order
  (``append_output``'s ``before`` is the offset of the new bytes), so it describes the
  store's output exactly.
- The cache is bounded (``max_journals``, least recently fed evicted first). A journal
  that is not in memory — evicted, or the control process restarted — is rebuilt from
  two ranges of the stored output (the head and the tail, 40 KB), never from all of it.
- A new attempt replaces the journal of the previous one.
"""

from collections import OrderedDict

from cortexd.journal import HEAD_BYTES, Journal, JournalView, tail_range
from cortexd.store import Store

MAX_JOURNALS = 4096


class JournalCache:
    def __init__(self, store: Store, max_journals: int = MAX_JOURNALS) -> None:
        self._store = store
        self._max = max_journals
        self._journals: OrderedDict[str, tuple[int, Journal]] = OrderedDict()
        self.rebuilds = 0

    def __len__(self) -> int:
        return len(self._journals)

    async def _load(self, task_id: str, attempt: int, total: int) -> Journal:
        start, end = tail_range(total)
        head = await self._store.read_output(task_id, attempt, 0, min(total, HEAD_BYTES))
        tail = (await self._store.read_output(task_id, attempt, start, end - start)
                if end > start else b"")
        self.rebuilds += 1
        return Journal.restore(total, head, tail)

    def _keep(self, task_id: str, attempt: int, journal: Journal) -> None:
        self._journals[task_id] = (attempt, journal)
        self._journals.move_to_end(task_id)
        while len(self._journals) > self._max:
            self._journals.popitem(last=False)

    async def appended(self, task_id: str, attempt: int, offset: int, data: bytes) -> None:
        """The store now holds ``data`` at ``offset`` (the durable end before it)."""
        held = self._journals.get(task_id)
        journal = held[1] if held is not None and held[0] == attempt else None
        if journal is None and offset == 0:
            journal = Journal()
        if journal is None or not journal.append(offset, data):
            # Not in memory, or out of step: rebuild from what the store now holds.
            journal = await self._load(task_id, attempt, offset + len(data))
        self._keep(task_id, attempt, journal)

    async def view(self, task_id: str, attempt: int, total: int) -> JournalView:
        """The journal of ``attempt`` whose stored output is ``total`` bytes."""
        held = self._journals.get(task_id)
        if held is not None and held[0] == attempt and held[1].total == total:
            return held[1].view()
        journal = await self._load(task_id, attempt, total)
        self._keep(task_id, attempt, journal)
        return journal.view()

    def cached_view(self, task_id: str, attempt: int, total: int) -> JournalView | None:
        """The view :meth:`view` would give, if it is in memory (no store read)."""
        held = self._journals.get(task_id)
        if held is not None and held[0] == attempt and held[1].total == total:
            return held[1].view()
        return None

    def forget(self, task_id: str) -> None:
        self._journals.pop(task_id, None)
