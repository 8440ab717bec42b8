"""The event feed from the control process to the monitor process(es), bounded.

The Hub's publish hook hands every task event here; only events of monitored tasks
that are still watched go on, to the one subscriber (monitor process ``index`` of
``count``) whose share holds the task (crc32 of the task id). Output events are
thinned to at most one per task per :data:`OUTPUT_EVERY_MS` — a monitor needs to
know *that* output came (idle time, a prompt answered), not the bytes — except the
one that passes the task's last prompt, which always goes (it answers the prompt).

A task's events can be published before its monitor is registered (placement
assigns and the node starts a task while ``SubmitMany`` is still storing the agent
rows of the ones after it). So a submission announces the task id it will create
(:meth:`MonitorFeed.expect`) before the task exists; the feed holds that task's events
(at most :data:`MAX_HELD_EVENTS`, for at most :data:`HELD_TTL_S`) and hands them on
right after the task's ``monitored`` item when :meth:`MonitorFeed.watch` registers it,
so a monitor sees every state change of its task, in order, from its creation on.

Each subscriber's queue is bounded (:data:`MAX_FEED_EVENTS`); one that falls behind
is marked ``overflowed`` and its stream is ended: the monitor process reconnects and
starts again from a snapshot, so a slow monitor costs a resync, never memory, and
dispatch never waits for it.
"""

import asyncio
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_FEED_EVENTS = 20_000
OUTPUT_EVERY_MS = 1000
MAX_SUBSCRIBERS = 16
MAX_HELD_EVENTS = 64
MAX_HELD_TASKS = 50_000
HELD_TTL_S = 60.0

FeedItem = tuple[str, str, Any]  # (kind, task id, payload)


def share_of(task_id: str, count: int) -> int:
    return zlib.crc32(task_id.encode()) % max(1, count)


@dataclass(eq=False)
class Subscriber:
    index: int
    count: int
    queue: asyncio.Queue[FeedItem] = field(
        default_factory=lambda: asyncio.Queue(maxsize=MAX_FEED_EVENTS))
    overflowed: bool = False

    def offer(self, item: FeedItem) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True  # the stream handler sees it at its next item and ends


@dataclass(eq=False)
class MonitorFeed:
    watched: set[str] = field(default_factory=set)
    subscribers: list[Subscriber] = field(default_factory=list)
    # {task: (ms of the last output forwarded, its end)} for the thinning
    _output_fwd: dict[str, tuple[int, int]] = field(default_factory=dict)
    prompt_offsets: dict[str, int] = field(default_factory=dict)
    # {task: (monotonic time announced, its events so far)} until watch() or expiry
    _held: OrderedDict[str, tuple[float, list[FeedItem]]] = field(default_factory=OrderedDict)
    overflows: int = 0
    events: int = 0
    held_dropped: int = 0

    def subscribe(self, index: int, count: int) -> Subscriber | None:
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            return None
        sub = Subscriber(index, count)
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
            self.overflows += sub.overflowed

    def expect(self, task_id: str) -> None:
        """A monitored task ``task_id`` is about to be created: hold its events."""
        now = time.monotonic()
        while self._held:  # the oldest first: submissions that never registered
            first = next(iter(self._held))
            if len(self._held) < MAX_HELD_TASKS and now - self._held[first][0] < HELD_TTL_S:
                break
            del self._held[first]
        if task_id not in self.watched:
            self._held[task_id] = (now, [])

    def forget_expected(self, task_id: str) -> None:
        """The announced task was not created (refused, or deduplicated to another)."""
        self._held.pop(task_id, None)

    def watch(self, task_id: str, monitored: Any = None) -> None:
        """Watch ``task_id``; with ``monitored`` (a registration), send the task's
        ``monitored`` item, then the events held since :meth:`expect`."""
        self.watched.add(task_id)
        _, held = self._held.pop(task_id, (0.0, []))
        if monitored is not None:
            self.send("monitored", task_id, monitored)
        for item in held:
            self.send(*item)

    def unwatch(self, task_id: str) -> None:
        self.watched.discard(task_id)
        self._held.pop(task_id, None)
        self._output_fwd.pop(task_id, None)
        self.prompt_offsets.pop(task_id, None)

    def send(self, kind: str, task_id: str, payload: Any) -> bool:
        """Hand one item to the subscriber whose share holds the task; False if none."""
        delivered = False
        for sub in self.subscribers:
            if share_of(task_id, sub.count) == sub.index:
                sub.offer((kind, task_id, payload))
                delivered = True
        self.events += delivered
        return delivered

    def on_publish(self, task_id: str, event: tuple[str, Any]) -> None:
        """The Hub's publish hook: called for every task event, so it is cheap for
        tasks nobody monitors (one set lookup)."""
        if task_id not in self.watched:
            if task_id in self._held:
                self._hold_or_send(event[0], task_id, event[1])
            return
        if not self.subscribers:
            return
        self._hold_or_send(event[0], task_id, event[1])

    def _hold_or_send(self, kind: str, task_id: str, payload: Any) -> None:
        if kind == "output":
            attempt, before, data = payload
            end = before + len(data)
            now = int(time.time() * 1000)
            last_ms, last_end = self._output_fwd.get(task_id, (0, 0))
            prompt_at = self.prompt_offsets.get(task_id, -1)
            passes_prompt = last_end <= prompt_at < end
            if now - last_ms < OUTPUT_EVERY_MS and not passes_prompt:
                return
            self._output_fwd[task_id] = (now, end)
            item: FeedItem = ("output", task_id, (attempt, end, now))
        elif kind == "prompt":
            self.prompt_offsets[task_id] = int(payload.offset)
            item = ("prompt", task_id, payload)
        elif kind in ("state", "attention"):
            item = (kind, task_id, payload)
        else:
            return
        held = self._held.get(task_id)
        if held is None:
            self.send(*item)
        elif len(held[1]) < MAX_HELD_EVENTS:
            held[1].append(item)
        else:
            self.held_dropped += 1
