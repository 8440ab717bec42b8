"""The store's write observer: task transitions, their latencies, output and commits.

The store calls it after a write committed (``cortexd/store/rows.py``,
``groupcommit.py``); it never changes an outcome, and its own failure is
logged, not raised. Submit -> dispatch is the ASSIGNED row's update time less
its creation; dispatch -> finish needs the time of the ASSIGNED write, kept
per task for at most ``max_tracked`` tasks (the oldest is forgotten: its finish
is then not timed).
"""

from collections import OrderedDict

from cortex import logs
from cortexd.lifecycle import TERMINAL, State
from cortexd.metrics import hub as m
from cortexd.store.base import TaskRow


class StoreWriteMetrics:
    def __init__(self, hub: str, max_tracked: int = 100_000) -> None:
        self.hub = hub
        self.max_tracked = max_tracked
        self._assigned_ms: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._output = m.OUTPUT_BYTES.labels(hub)
        self._commit = m.STORE_COMMIT.labels(hub)
        self._batch = m.STORE_BATCH.labels(hub)
        self._failed = False

    def transitioned(self, row: TaskRow) -> None:
        try:
            self._transitioned(row)
        except Exception:
            self._hook_failed()

    def _transitioned(self, row: TaskRow) -> None:
        m.TRANSITIONS.labels(self.hub, row.tenant, row.state.value).inc()
        key = (row.task_id, row.attempt)
        if row.state is State.ASSIGNED:
            m.DISPATCH_LATENCY.labels(self.hub, row.tenant).observe(
                max(0, row.updated_ms - row.created_ms) / 1000)
            self._assigned_ms[key] = row.updated_ms
            if len(self._assigned_ms) > self.max_tracked:
                self._assigned_ms.popitem(last=False)
        elif row.state in TERMINAL and (at := self._assigned_ms.pop(key, None)) is not None:
            m.RUN_LATENCY.labels(self.hub, row.tenant).observe(
                max(0, row.updated_ms - at) / 1000)

    def appended(self, before: int, after: int) -> None:
        if after > before:
            self._output.inc(after - before)

    def committed(self, rows: int, seconds: float) -> None:
        self._batch.observe(rows)
        self._commit.observe(seconds)

    def _hook_failed(self) -> None:
        if not self._failed:  # once: a broken hook must not flood the log
            self._failed = True
            logs.get().exception("metrics_hook_failed", hook="store_writes")
