"""The bottom layer of the control process: its in-memory view and its links out.

Everything above (placement, attempts, node sessions, cluster upkeep, the API
services) shares one :class:`HubState` and imports this module, never the other
way round. It holds what the hub knows (nodes, the queue, shard links, the last
progress and prompt of running tasks, watchers) and the few acts every layer
needs: send a frame to a node or a record to a shard, publish an event, wake the
scheduler, end a task attempt (:meth:`HubState.finish`).

Invariants:

- Memory is bounded: prompts by ``MAX_LAST_PROMPTS``, known output ends by
  ``MAX_KNOWN_ENDS``, events for other hosts by ``MAX_REMOTE_EVENTS`` (then
  dropped and counted: a remote Watch re-reads the store when it hears nothing).
- ``NodeState.running`` holds the tasks the hub placed on or rebound to the node
  and not yet ended; progress and prompts are kept only for those.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex import logs
from cortex.errors import CortexError
from cortex.v1 import node_pb2
from cortexd.config import Settings
from cortexd.control.journals import JournalCache
from cortexd.control.logreads import LogReads
from cortexd.control.nodecalls import NodeCalls
from cortexd.control.watchers import Watchers
from cortexd.coord import Coordinator, DirEntry, LocalCoordinator, Message
from cortexd.ipc import messages as m
from cortexd.ipc.link import RingLink
from cortexd.lifecycle import State
from cortexd.serializers.envelope import Encoder
from cortexd.store import StaleWrite, Store, TaskRow
from cortexd.store.base import pack_row

MAX_LAST_PROMPTS = 10_000
#: Durable output ends remembered for running tasks (they leave at their end).
MAX_KNOWN_ENDS = 65_536
#: Clustered: events queued for watchers on other hosts, at most.
MAX_REMOTE_EVENTS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class NodeState:
    node_id: str
    epoch: int
    shard: int
    labels: dict[str, str]
    capacity: int
    agent_version: str = ""
    attached: bool = False
    draining: bool = False
    last_seen_ms: int = 0
    running: set[str] = field(default_factory=set)
    last_picked: int = 0
    isolation: str = ""  # Hello.isolation: "cgroup" or "process-group" ("" before attach)
    published_running: int = -1  # clustered: the running count last put in the directory


@dataclass(slots=True)
class ShardInfo:
    pid: int = 0
    alive: bool = False
    restarts: int = 0
    nodes: int = 0
    frames_in: int = 0
    frames_out: int = 0


def _no_workspaces(owner: str, name: str) -> None:
    return None


def _unheard(node: NodeState) -> None:
    return None


def held_bytes(row: TaskRow) -> int:
    """What a queued task holds in memory here, about: its command, env and paths."""
    return (256 + len(row.command) + len(row.cwd) + len(row.workspace)
            + sum(len(k) + len(v) for k, v in row.env.items())
            + sum(len(p) for p in row.outputs) + sum(len(p) + 80 for _, _, p in row.inputs))


class TaskQueue(OrderedDict[str, TaskRow]):
    """The queued tasks in order, counting the bytes they hold (``max_queued_bytes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __setitem__(self, key: str, value: TaskRow) -> None:
        old = self.get(key)
        if old is not None:
            self.bytes -= held_bytes(old)
        super().__setitem__(key, value)
        self.bytes += held_bytes(value)

    def __delitem__(self, key: str) -> None:
        self.bytes -= held_bytes(self[key])
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.bytes -= held_bytes(self[key])
        return super().pop(key, *default)

    def room_for(self, row: TaskRow, max_tasks: int, max_bytes: int) -> str | None:
        """Why ``row`` may not be queued now (the message names the limit), or None."""
        return self.room_for_size(held_bytes(row), max_tasks, max_bytes)

    def room_for_size(self, size: int, max_tasks: int, max_bytes: int,
                      held: tuple[int, int] = (0, 0)) -> str | None:
        """:meth:`room_for` a task of ``size`` held bytes; ``held``: tasks and bytes of
        room already promised to submissions not yet queued."""
        if len(self) + held[0] >= max_tasks:
            return f"queue is full ({max_tasks} tasks)"
        if self.bytes + held[1] + size > max_bytes:
            return (f"queue is full: its tasks hold {self.bytes + held[1]} bytes and this one "
                    f"{size}, over the limit of {max_bytes} bytes (max_queued_bytes); "
                    "retry later")
        return None


class FrameTooLarge(CortexError):
    """A frame for a node is over the node stream's limit (``max_frame_bytes``): sent,
    it would break the stream (and every resend on re-attach would break it again)."""


def cancel_frame(task_id: str, attempt: int, reason: str) -> node_pb2.HubFrame:
    return node_pb2.HubFrame(cancel=node_pb2.CancelTask(task_id=task_id, attempt=attempt,
                                                        reason=reason))


class HubState:
    def __init__(self, settings: Settings, store: Store, encoder: Encoder, hub_id: str) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.welcome_key: Ed25519PrivateKey | None = None  # signs Welcome.hub_proof
        self.hub_id = hub_id
        self.watchers = Watchers(settings.max_watchers, settings.max_watchers_per_client)
        self.journals = JournalCache(store)
        self.log_reads = LogReads()
        self.node_calls = NodeCalls()  # browserd: calls to a node's tools (nodecalls.py)
        # Last TaskProgress per running task: {task_id: (attempt, spooled, held back)}.
        # Memory only (a node re-reports within a second); entries leave with the task.
        self.progress: dict[str, tuple[int, int, int]] = {}
        # Last prompt event per task (memory only; the oldest leave past MAX_LAST_PROMPTS).
        self.prompts: OrderedDict[str, node_pb2.PromptEvent] = OrderedDict()
        self.nodes: dict[str, NodeState] = {}
        self.links: dict[int, RingLink] = {}
        self.shards: dict[int, ShardInfo] = {}
        #: Nodes an operator drained (cortexd/control/operate.py): they stay draining when
        #: they attach again, until undrained.
        self.held_nodes: set[str] = set()
        self.queue = TaskQueue()
        self.hops: dict[str, int] = {}  # queued task -> times it was offered between hosts
        # Coordination with other hub hosts (cortexd/coord); local = alone.
        self.coord: Coordinator = LocalCoordinator(hub_id)
        self.remote_watch: dict[str, dict[str, float]] = {}  # task -> {host: until}
        self.remote_events: asyncio.Queue[tuple[str, Message]] = asyncio.Queue(
            MAX_REMOTE_EVENTS)
        self.remote_events_dropped = 0
        self.fenced_frames = 0  # frames of a fenced session (refused by the store)
        # {task: (attempt, durable output end)} after this hub's appends (the monitors'
        # screen reads the journal up to it, monitorapi.py).
        self.ends: dict[str, tuple[int, int]] = {}
        # {task: (attempt, output end held)} when the hub last closed a session to get the
        # rest of a finished task's output (finishes.py); they leave with the task.
        self.resyncs: dict[str, tuple[int, int]] = {}
        # Called with every task event (the monitors' feed, cortexd/control/monitorfeed.py).
        self.on_publish: list[Callable[[str, tuple[str, Any]], None]] = []
        # The nodes a workspace (owner, name) is attached to; None: no such workspace.
        # Set by the control process (cortexd/workspaces/hub.py WorkspaceHub.nodes_of).
        self.workspace_nodes: Callable[[str, str], Collection[str] | None] = _no_workspaces
        # Told when a node's load fell (a task left it) or it became placeable or not
        # (attached, detached, undrained): placement's kept Placer (placement.py).
        self.node_changed: Callable[[NodeState], None] = _unheard
        self._kick = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.log = logs.get()

    # -- links out -------------------------------------------------------------------

    async def to_shard(self, shard: int, record: bytes) -> None:
        link = self.links.get(shard)
        if link is not None and not link.send_nowait(record):
            await link.send(record)

    async def send_node(self, node: NodeState, frame: node_pb2.HubFrame | bytes) -> None:
        raw = frame if isinstance(frame, bytes) else frame.SerializeToString()
        if len(raw) > self.settings.max_frame_bytes:  # never one frame that breaks a stream
            raise FrameTooLarge(f"a {len(raw)}-byte frame for node {node.node_id} is over the "
                                f"node stream's limit of {self.settings.max_frame_bytes} bytes "
                                "(max_frame_bytes)")
        await self.to_shard(node.shard, m.pack(m.SEND, node.node_id, node.epoch, raw))

    def kick(self) -> None:
        """Wake the scheduler (placement.py): a task was queued or a slot freed."""
        self._kick.set()

    async def kicked(self) -> None:
        await self._kick.wait()
        self._kick.clear()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, held until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def dir_entry(self, node: NodeState) -> DirEntry:
        return DirEntry(self.coord.host_id, node.shard, node.epoch, node.labels, node.capacity,
                        len(node.running), node.draining)

    # -- events for watchers, here and on other hosts ------------------------------

    def publish(self, task_id: str, event: tuple[str, Any]) -> None:
        self.watchers.publish(task_id, event)
        for hook in self.on_publish:
            hook(task_id, event)
        hosts = self.remote_watch.get(task_id)
        if not hosts:
            return
        kind, payload = event
        if kind == "state":
            msg: Message = ["event", task_id, "state", pack_row(payload)]
        elif kind == "output":
            msg = ["event", task_id, "output", *payload]
        elif kind == "prompt":
            msg = ["event", task_id, "prompt", payload.SerializeToString()]
        else:
            return
        now = time.monotonic()
        for host, until in list(hosts.items()):
            if until < now:
                del hosts[host]
                continue
            try:
                self.remote_events.put_nowait((host, msg))
            except asyncio.QueueFull:
                self.remote_events_dropped += 1
        if not hosts:
            del self.remote_watch[task_id]

    # -- what is known of running tasks ------------------------------------------

    def remember_end(self, task_id: str, attempt: int, end: int) -> None:
        self.ends.pop(task_id, None)  # re-inserted last: the oldest leave first
        self.ends[task_id] = (attempt, end)
        if len(self.ends) > MAX_KNOWN_ENDS:
            del self.ends[next(iter(self.ends))]

    def remember_prompt(self, ev: node_pb2.PromptEvent) -> None:
        self.prompts.pop(ev.task_id, None)
        self.prompts[ev.task_id] = ev
        while len(self.prompts) > MAX_LAST_PROMPTS:
            self.prompts.popitem(last=False)

    def last_prompt(self, task_id: str, attempt: int) -> node_pb2.PromptEvent | None:
        ev = self.prompts.get(task_id)
        return ev if ev is not None and ev.attempt == attempt else None

    def task_progress(self, task_id: str, attempt: int) -> tuple[int, int]:
        """(spooled, held back) as the node last reported them for this attempt."""
        held = self.progress.get(task_id)
        return (held[1], held[2]) if held is not None and held[0] == attempt else (0, 0)

    def ended(self, row: TaskRow) -> None:
        """``row`` is durable in a terminal (or re-queued) state: forget it as running."""
        if (node := self.nodes.get(row.node_id)) is not None:
            node.running.discard(row.task_id)
            self.node_changed(node)
        self.progress.pop(row.task_id, None)
        self.ends.pop(row.task_id, None)
        self.resyncs.pop(row.task_id, None)
        self.publish(row.task_id, ("state", row))

    async def finish(self, task: TaskRow, state: State, reason: str) -> None:
        """End ``task``'s attempt as ``state`` (conditional on its attempt and epoch)."""
        try:
            row = await self.store.transition(task.task_id, attempt=task.attempt,
                                              node_epoch=task.node_epoch, to=state,
                                              reason=reason, now_ms=now_ms())
        except StaleWrite:
            return
        self.ended(row)
