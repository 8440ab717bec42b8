"""The watch service: one task's state, output and prompts as they happen (``Watch``).

A watcher is registered before the store is read, so nothing published after the
read is missed; stored output is sent first, then live events. A watcher that falls
behind (watchers.py, *lagged*) re-reads the store: a slow client costs reads, never
memory, and never misses a byte. Clustered, the other hosts are asked for the
task's events while the Watch lasts, and a quiet spell re-reads the task (it may
run on a host whose events did not reach us; the store has the truth).
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cortex.v1 import node_pb2
from cortexd.control.cluster import REMOTE_WATCH_S, Cluster
from cortexd.control.errors import RequestError
from cortexd.control.state import HubState
from cortexd.control.tasks import TaskService
from cortexd.control.watchers import Watcher
from cortexd.store import TaskRow

WATCH_CHUNK = 256 << 10
WATCH_POLL_S = 2.0  # clustered: a quiet Watch re-reads the task from the store this often


@dataclass(frozen=True, slots=True)
class StateSeen:
    task: TaskRow
    prompt: node_pb2.PromptEvent | None = None  # the last prompt, on a fresh read


@dataclass(frozen=True, slots=True)
class OutputSeen:
    attempt: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PromptSeen:
    event: node_pb2.PromptEvent


@dataclass(frozen=True, slots=True)
class AttentionSeen:
    reason: str  # "" when a person answered


Seen = StateSeen | OutputSeen | PromptSeen | AttentionSeen


def _live_chunk(payload: Any, attempt: int, offset: int) -> bytes:
    """The part of a live output event that continues a watcher at ``offset``."""
    ev_attempt, ev_offset, data = payload
    if ev_attempt == attempt and ev_offset <= offset < ev_offset + len(data):
        return bytes(data[offset - ev_offset:])
    return b""


class WatchService:
    def __init__(self, state: HubState, tasks: TaskService, cluster: Cluster) -> None:
        self.state = state
        self.tasks = tasks
        self.cluster = cluster

    def register(self, task_id: str, client: str = "") -> Watcher:
        """A watcher for ``task_id`` (which need not exist yet: Run registers first) held
        by ``client`` (the caller's credential name). The caller removes it
        (``state.watchers.remove``)."""
        watchers = self.state.watchers
        if (why := watchers.refusal(client)) is not None:
            raise RequestError("RESOURCE_EXHAUSTED", why)
        watcher = watchers.add(task_id, client)
        assert watcher is not None
        return watcher

    async def _add_watcher(self, task_id: str, client: str) -> Watcher:
        task = await self.tasks.get(task_id)
        return self.register(task.task_id, client)

    async def watch(self, task_id: str, from_offset: int, no_output: bool, client: str = "",
                    ) -> AsyncIterator[Seen]:
        watcher = await self._add_watcher(task_id, client)
        remote = await self._watch_remote(task_id)
        try:
            async for seen in self._events(watcher, task_id, from_offset, no_output):
                yield seen
        finally:
            self.state.watchers.remove(watcher)
            if remote is not None:
                remote.cancel()

    async def _stored_output(self, task_id: str, attempt: int,
                             offset: int) -> AsyncIterator[OutputSeen]:
        while data := await self.state.store.read_output(task_id, attempt, offset,
                                                         WATCH_CHUNK):
            yield OutputSeen(attempt, offset, data)
            offset += len(data)

    async def _events(self, watcher: Watcher, task_id: str, from_offset: int,
                      no_output: bool) -> AsyncIterator[Seen]:
        st = self.state
        task = await self.tasks.get(task_id)
        # A prompt seen before this watcher registered is still news to it: it is
        # sent after the output that led to it (and never twice, see `sent`).
        pending = st.last_prompt(task.task_id, task.attempt)
        yield StateSeen(task, pending)
        attempt, offset = task.attempt, from_offset
        sent: tuple[int, int] | None = None
        while True:
            if not no_output and attempt > 0:
                async for chunk in self._stored_output(task.task_id, attempt, offset):
                    yield chunk
                    offset += len(chunk.data)
            if pending is not None and not task.state.terminal:
                sent = (pending.offset, pending.at_ms)
                yield PromptSeen(pending)
            pending = None
            if task.state.terminal:
                return
            kind, payload = await self._next_event(watcher, task)
            if kind == "lagged":
                watcher.lagged = False
                task = await self.tasks.get(task.task_id)
                pending = st.last_prompt(task.task_id, task.attempt)
                yield StateSeen(task, pending)
            elif kind == "state":
                assert isinstance(payload, TaskRow)
                if payload.attempt != attempt:
                    attempt, offset = payload.attempt, 0
                task = payload
                yield StateSeen(task)
            elif kind == "attention":  # a monitor escalated to a person, or one answered
                yield AttentionSeen(str(payload))
            elif kind == "prompt":
                assert isinstance(payload, node_pb2.PromptEvent)
                if payload.attempt == attempt and (payload.offset, payload.at_ms) != sent:
                    yield PromptSeen(payload)
            elif kind == "output" and not no_output:
                # An event past our offset means we missed some: the store read at
                # the top of the loop catches up. One before it is a duplicate.
                if live := _live_chunk(payload, attempt, offset):
                    yield OutputSeen(attempt, offset, live)
                    offset += len(live)

    async def _next_event(self, watcher: Watcher, task: TaskRow) -> tuple[str, Any]:
        """The watcher's next event. Clustered, a quiet spell re-reads the task.
        ("poll", None) matches no event kind: the loop just reads the stored output
        again."""
        if not self.state.coord.clustered:
            return await watcher.queue.get()
        try:
            return await asyncio.wait_for(watcher.queue.get(), WATCH_POLL_S)
        except TimeoutError:
            fresh = await self.tasks.get(task.task_id)
            if (fresh.state, fresh.attempt) != (task.state, task.attempt):
                return ("state", fresh)
            return ("poll", None)

    async def _watch_remote(self, task_id: str) -> "asyncio.Task[None] | None":
        """Clustered: ask the other hosts for this task's events, and keep asking while
        the Watch lasts (the returned task; cancel it). Interest is sent before the store
        is read, so that events published after the read reach this watcher."""
        if not self.state.coord.clustered:
            return None
        await self.cluster.watch_remote(task_id)

        async def refresh() -> None:
            while True:
                await asyncio.sleep(REMOTE_WATCH_S / 3)
                await self.cluster.watch_remote(task_id)
        return asyncio.create_task(refresh())
