"""The control process's core: node directory, scheduling and the task lifecycle.

Inputs are ring messages from the shards (attach, node frames, detach) and
Control API calls; outputs are store writes, HubFrame bytes sent to a node's
shard, and events for watchers. Every write about a task is conditional on its
(attempt, node session epoch) in the store, so a frame from a superseded session
or attempt is refused there, recorded, and answered with a cancel instead of
being believed.

Messages of one shard are handled in order by one coroutine; different shards
interleave only at store awaits, and the conditional writes keep that safe.
"""

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, fields
from typing import Any

from cortex import logs
from cortex.errors import CortexError
from cortex.ids import is_task_id
from cortex.tools import node_labels
from cortex.v1 import artifacts_pb2, node_pb2
from cortexd.config import Settings
from cortexd.control.journals import JournalCache
from cortexd.control.logreads import LogReads
from cortexd.control.watchers import Watchers
from cortexd.coord import Coordinator, DirEntry, LocalCoordinator, Message, ShardReport
from cortexd.ipc import messages as m
from cortexd.ipc.link import RingLink
from cortexd.lifecycle import ACTIVE, State, finished_state
from cortexd.scheduler import Candidate, Placer, pick
from cortexd.serializers.envelope import Encoder, EnvelopeRequest
from cortexd.store import NodeRow, StaleWrite, Store, TaskRow

#: Rejections after which a new attempt may succeed (the envelope was fine).
RETRYABLE_REJECTIONS = frozenset({"stale_epoch", "expired", "capacity", "draining"})
MAX_PLACEMENTS_PER_PASS = 512
#: Clustered: a task is offered on to another host at most this often in a row.
MAX_OFFER_HOPS = 3
MAX_OFFERS_PER_PASS = 512
OFFER_RETRY_MIN_S = 0.1
OFFER_RETRY_MAX_S = 2.0
#: Clustered: events queued for watchers on other hosts, at most (then dropped:
#: a remote Watch also re-reads the store when it hears nothing for a while).
MAX_REMOTE_EVENTS = 10_000
MAX_REMOTE_WATCHED = 10_000
REMOTE_WATCH_S = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


class RequestError(CortexError):
    """A Control request that cannot be served; ``code`` is a grpc.StatusCode name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


MAX_LAST_PROMPTS = 10_000
#: Ring messages of one shard waiting in its per-node queues, at most; past it the
#: control process stops draining that shard's ring (the ring fills: back-pressure).
MAX_PENDING_PER_SHARD = 4096
#: Frame kinds whose store writes may be in flight together for one node (each is a
#: conditional write on its task's attempt and epoch; none changes what another checks).
PIPELINED_KINDS = frozenset({"started", "output"})
MAX_RUN = 64  # frames of one node handled side by side, at most
#: Durable output ends remembered for running tasks (they leave at their end).
MAX_KNOWN_ENDS = 65_536
#: How far ahead in a node's queue an output looks for its task's finished frame.
FINISHED_LOOKAHEAD = 8

#: A ring message from a shard with its node frame parsed once (None for others).
Pending = tuple[list[Any], node_pb2.NodeFrame | None]


@dataclass(eq=False)
class ShardQueues:
    """One shard's ring messages waiting for their node's worker, in order per node."""

    queues: dict[str, deque[Pending]] = field(default_factory=dict)
    count: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    workers: set[asyncio.Task[None]] = field(default_factory=set)

    def took(self, n: int) -> None:
        self.count -= n
        if self.count <= MAX_PENDING_PER_SHARD // 2:
            self.room.set()


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


_TASK_FIELDS = tuple(f.name for f in fields(TaskRow))


def pack_row(row: TaskRow) -> list[Any]:
    return [getattr(row, name).value if name == "state" else getattr(row, name)
            for name in _TASK_FIELDS]


def unpack_row(values: list[Any]) -> TaskRow:
    kw = dict(zip(_TASK_FIELDS, values, strict=True))
    kw["state"] = State(kw["state"])
    return TaskRow(**kw)


def _running(node: NodeState) -> int:
    return len(node.running)


def _finished_follows(out: node_pb2.TaskOutput, later: deque[Pending]) -> bool:
    for i, (_, frame) in enumerate(later):
        if i == FINISHED_LOOKAHEAD:
            break
        if (frame is not None and frame.HasField("finished")
                and frame.finished.task_id == out.task_id
                and frame.finished.attempt == out.attempt):
            return True
    return False


def spec_of(task: TaskRow) -> bytes:
    return node_pb2.TaskSpec(command=task.command, env=task.env, cwd=task.cwd,
                             timeout_s=task.timeout_s, idle_timeout_s=task.idle_timeout_s,
                             memory_max_bytes=task.memory_max_bytes,
                             pids_max=task.pids_max, outputs=task.outputs, inputs=[
                                 artifacts_pb2.ArtifactInput(digest=artifacts_pb2.Digest(
                                     sha256=sha, size_bytes=size), path=path)
                                 for sha, size, path in task.inputs],
                             tool=task.tool).SerializeToString()


class Hub:
    def __init__(self, settings: Settings, store: Store, encoder: Encoder, hub_id: str) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.hub_id = hub_id
        self.watchers = Watchers(settings.max_watchers)
        self.journals = JournalCache(store)
        self.log_reads = LogReads()
        # Last TaskProgress per running task: {task_id: (attempt, spooled, held back)}.
        # Memory only (a node re-reports within a second); entries leave with the task.
        self.progress: dict[str, tuple[int, int, int]] = {}
        # Last prompt event per task (memory only; the oldest leave past MAX_LAST_PROMPTS).
        self.prompts: OrderedDict[str, node_pb2.PromptEvent] = OrderedDict()
        self.nodes: dict[str, NodeState] = {}
        self.links: dict[int, RingLink] = {}
        self.shards: dict[int, ShardInfo] = {}
        self.queue: OrderedDict[str, TaskRow] = OrderedDict()
        self._kick = asyncio.Event()
        self._grace: dict[str, asyncio.TimerHandle] = {}
        self._picks = 0
        self._background: set[asyncio.Task[None]] = set()
        # Coordination with other hub hosts (cortexd/coord); local = alone.
        self.coord: Coordinator = LocalCoordinator(hub_id)
        self.hops: dict[str, int] = {}  # queued task -> times it was offered between hosts
        self.remote_watch: dict[str, dict[str, float]] = {}  # task -> {host: until}
        self._remote_events: asyncio.Queue[tuple[str, Message]] = asyncio.Queue(
            MAX_REMOTE_EVENTS)
        self.remote_events_dropped = 0
        self._suspects: dict[str, int] = {}  # janitor: node -> epoch seen orphaned once
        self.fenced_frames = 0
        self._fenced: dict[int, list[tuple[str, int]]] = {}  # shard -> sessions to close
        self._offering: asyncio.Task[None] | None = None
        self._offer_retry: asyncio.TimerHandle | None = None
        self._offer_retry_s = OFFER_RETRY_MIN_S
        self._told_interval = settings.heartbeat_interval_ms
        self._interval = settings.heartbeat_interval_ms
        self._interval_at = 0.0
        self._fencing: dict[int, asyncio.Task[None]] = {}  # shard -> its fencing, running
        # {task: (attempt, durable output end)} after this hub's appends: a finished
        # frame that agrees with it needs no read of the task (see _on_finished).
        self._ends: dict[str, tuple[int, int]] = {}
        # Called with every task event (the monitors' feed, cortexd/control/monitorfeed.py).
        self.on_publish: list[Callable[[str, tuple[str, Any]], None]] = []
        self.log = logs.get()

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
                self._remote_events.put_nowait((host, msg))
            except asyncio.QueueFull:
                self.remote_events_dropped += 1
        if not hosts:
            del self.remote_watch[task_id]

    async def send_remote_events(self) -> None:
        while True:
            host, msg = await self._remote_events.get()
            try:
                await self.coord.send(host, msg)
            except Exception:  # one bad event must not end the forwarding
                self.log.exception("remote_event_failed", host=host, kind=msg[2])

    # -- start-up -----------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild the in-memory view from the store after a (re)start."""
        for row in await self.store.list_nodes():
            self.nodes[row.node_id] = NodeState(row.node_id, row.session_epoch, row.shard,
                                                row.labels, row.capacity, row.agent_version,
                                                attached=False, last_seen_ms=row.last_seen_ms)
        for task in await self.store.tasks_in(frozenset({State.QUEUED})):
            self.queue[task.task_id] = task
        active = await self.store.tasks_in(ACTIVE)
        for task in active:
            if (node := self.nodes.get(task.node_id)) is not None:
                node.running.add(task.task_id)
        for node in self.nodes.values():
            if node.running:
                self._start_grace(node.node_id, node.epoch)
        self.log.info("control_recovered", nodes=len(self.nodes), queued=len(self.queue),
                      active=len(active))

    # -- ring input ---------------------------------------------------------------

    async def serve_shard(self, shard: int, link: RingLink) -> None:
        """Handle a shard's messages: in order per node, different nodes concurrently.

        Only one node's messages must keep their order (output before finished, attach
        before frames). Each node with messages waiting has one worker that handles
        them in order; the ring is read on while workers wait for the store, so the
        writes of many nodes and of successive ring batches share group commits
        (there is no barrier per ring batch). Node frames are parsed once, here.
        """
        pending = ShardQueues()
        try:
            await self._read_shard(shard, link, pending)
        finally:  # cancelled (stop): the node workers go with the reader
            for worker in pending.workers:
                worker.cancel()

    async def _read_shard(self, shard: int, link: RingLink, pending: ShardQueues) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if pending.count >= MAX_PENDING_PER_SHARD:
                pending.room.clear()
                await pending.room.wait()
            for record in await link.recv():
                try:
                    msg = m.unpack(record)
                    frame = (node_pb2.NodeFrame.FromString(msg[3]) if msg[0] == m.FRAME
                             else None)
                except Exception:  # msgpack ValueError, protobuf DecodeError
                    self.log.error("ring_record_malformed", shard=shard, size=len(record))
                    continue
                key = str(msg[2] if msg[0] == m.ATTACH else msg[1] if len(msg) > 1 else "")
                pending.count += 1
                queue = pending.queues.get(key)
                if queue is not None:
                    queue.append((msg, frame))
                    continue
                pending.queues[key] = queue = deque([(msg, frame)])
                worker = loop.create_task(self._drain_node(shard, key, queue, pending))
                pending.workers.add(worker)
                worker.add_done_callback(pending.workers.discard)

    async def _drain_node(self, shard: int, key: str, queue: deque[Pending],
                          pending: ShardQueues) -> None:
        """Handle one node's queued messages in order until its queue is empty.

        A run of started/output frames (a task's Started and its first output, say) is
        handled side by side: gather starts the handlers in order and each queues its
        store write before its first suspension, so the run's writes go out in one
        group commit, in the node's order, instead of one commit after the other. (Were
        two outputs of a task ever queued out of order, the later one would be refused
        as a gap and the node would resend it from the acknowledged offset.)
        """
        try:
            while queue:
                run = [queue.popleft()]
                frame = run[0][1]
                if frame is not None and frame.WhichOneof("kind") in PIPELINED_KINDS:
                    while queue and len(run) < MAX_RUN and (nxt := queue[0][1]) is not None \
                            and nxt.WhichOneof("kind") in PIPELINED_KINDS:
                        run.append(queue.popleft())
                pending.took(len(run))
                if len(run) == 1:
                    await self._handle(shard, run[0], queue)
                else:
                    await asyncio.gather(*(self._handle(shard, item, queue) for item in run))
        finally:
            if pending.queues.get(key) is queue:
                del pending.queues[key]

    async def _handle(self, shard: int, item: Pending, queue: deque[Pending]) -> None:
        msg, frame = item
        try:
            if frame is None:
                await self._dispatch(shard, msg)
            else:
                node_id, epoch = msg[1], msg[2]
                assert isinstance(node_id, str) and isinstance(epoch, int)
                await self._on_node_frame(node_id, epoch, frame, queue)
        except Exception:
            self.log.exception("ring_message_failed", shard=shard)

    async def _dispatch(self, shard: int, msg: list[object]) -> None:
        kind = msg[0]
        if kind == m.FRAME:
            node_id, epoch, raw = msg[1], msg[2], msg[3]
            assert isinstance(node_id, str) and isinstance(epoch, int)
            assert isinstance(raw, bytes)
            await self.on_frame(node_id, epoch, raw)
        elif kind == m.ATTACH:
            conn_id, node_id, hello = msg[1], msg[2], msg[3]
            assert isinstance(conn_id, int) and isinstance(node_id, str)
            assert isinstance(hello, bytes)
            await self.on_attach(shard, conn_id, node_id, hello)
        elif kind == m.DETACH:
            node_id, epoch, reason = msg[1], msg[2], msg[3]
            assert isinstance(node_id, str) and isinstance(epoch, int)
            await self.on_detach(node_id, epoch, str(reason))
        elif kind == m.STATS:
            info = self.shards.setdefault(shard, ShardInfo())
            info.nodes, info.frames_in, info.frames_out = (int(x) for x in msg[1:4])  # type: ignore[call-overload]

    async def _to_shard(self, shard: int, record: bytes) -> None:
        link = self.links.get(shard)
        if link is not None and not link.send_nowait(record):
            await link.send(record)

    async def send_node(self, node: NodeState, frame: node_pb2.HubFrame | bytes) -> None:
        raw = frame if isinstance(frame, bytes) else frame.SerializeToString()
        await self._to_shard(node.shard, m.pack(m.SEND, node.node_id, node.epoch, raw))

    # -- attach / detach ----------------------------------------------------------

    async def on_attach(self, shard: int, conn_id: int, node_id: str, hello_raw: bytes) -> None:
        hello = node_pb2.Hello.FromString(hello_raw)
        epoch = await self.store.mint_epoch()
        old = self.nodes.get(node_id)
        if old is not None and old.attached:
            await self._to_shard(old.shard, m.pack(m.CLOSE, node_id, old.epoch,
                                                   "superseded by a newer session"))
        labels = node_labels(hello.labels, ((t.name, t.version) for t in hello.tools))
        for bad in hello.tool_problems:
            self.log.warning("node_tool_skipped", node=node_id, tool=bad.name, error=bad.error)
        node = NodeState(node_id, epoch, shard, labels, hello.capacity,
                         hello.agent_version, attached=True, last_seen_ms=now_ms(),
                         isolation=hello.isolation)
        self.nodes[node_id] = node
        self._cancel_grace(node_id)
        await self.store.node_attached(NodeRow(node_id, epoch, node.labels, node.capacity,
                                               node.agent_version, shard, True,
                                               node.last_seen_ms))
        self._suspects.pop(node_id, None)
        self.coord.node_up(self.dir_entry(node), node_id)
        welcome = node_pb2.Welcome(session_epoch=epoch, hub_id=self.hub_id, shard=shard,
                                   heartbeat_interval_ms=self.heartbeat_interval_ms(),
                                   fold_frames=True)
        resend: list[TaskRow] = []
        cancels: list[TaskRow] = []
        reported: set[str] = set()
        for rep in hello.tasks:
            reported.add(rep.task_id)
            task = await self.store.get_task(rep.task_id) if is_task_id(rep.task_id) else None
            keep = (task is not None and task.attempt == rep.attempt
                    and task.node_id == node_id and task.state in ACTIVE)
            if task is not None and keep:
                await self.store.rebind_epoch(task.task_id, task.attempt, node_id, epoch)
                node.running.add(task.task_id)
                if task.cancel_requested:
                    cancels.append(task)
                welcome.verdicts.add(task_id=rep.task_id, attempt=rep.attempt,
                                     verdict=node_pb2.VERDICT_KEEP,
                                     resume_offset=task.output_bytes)
            else:
                welcome.verdicts.add(task_id=rep.task_id, attempt=rep.attempt,
                                     verdict=node_pb2.VERDICT_KILL)
        for task in await self.store.tasks_in(ACTIVE, node_id):
            if task.task_id in reported:
                continue
            if task.state is State.ASSIGNED:
                # Dispatch is at-least-once: the envelope may never have arrived.
                await self.store.rebind_epoch(task.task_id, task.attempt, node_id, epoch)
                task.node_epoch = epoch
                node.running.add(task.task_id)
                resend.append(task)
            else:
                await self._finish(task, State.LOST, reason="node came back without the task")
        await self._to_shard(shard, m.pack(m.WELCOME, conn_id, node_id, epoch,
                                           node_pb2.HubFrame(welcome=welcome).SerializeToString(),
                                           welcome.heartbeat_interval_ms))
        self.log.info("node_admitted", node=node_id, epoch=epoch, shard=shard,
                      kept=len(node.running) - len(resend), resent=len(resend))
        if resend:
            await self._dispatch_envelopes([(t, node) for t in resend])
        for task in cancels:
            await self.send_node(node, node_pb2.HubFrame(cancel=node_pb2.CancelTask(
                task_id=task.task_id, attempt=task.attempt, reason="cancel requested")))
        self.kick()

    def dir_entry(self, node: NodeState) -> DirEntry:
        return DirEntry(self.coord.host_id, node.shard, node.epoch, node.labels, node.capacity,
                        len(node.running), node.draining)

    async def _tell_interval(self) -> None:
        """The interval grows with the fleet: when it has moved by 10 % since the shards
        were last told, tell them; their heartbeat acks carry it to every node."""
        interval = self.heartbeat_interval_ms()
        if abs(interval - self._told_interval) * 10 >= self._told_interval:
            self._told_interval = interval
            record = m.pack(m.INTERVAL, interval)
            for shard in list(self.links):
                await self._to_shard(shard, record)

    def heartbeat_interval_ms(self) -> int:
        """The interval a node is asked for: it grows with the fleet (DESIGN §3).

        Each heartbeat costs the hub one gRPC message in and one out (~250 µs of CPU
        measured here, `bench/scenarios.py hold`), so the fleet as a whole is held
        to ``max_heartbeats_per_s``; the configured interval is the floor.
        """
        now = time.monotonic()
        if now - self._interval_at >= 1.0:  # counted at most once a second (storms)
            attached = sum(1 for n in self.nodes.values() if n.attached)
            by_budget = attached * 1000 // self.settings.max_heartbeats_per_s
            self._interval = int(max(self.settings.heartbeat_interval_ms, by_budget))
            self._interval_at = now
        return self._interval

    async def run_housekeeping(self) -> None:
        """Once a second: tell the shards when the heartbeat interval has moved."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._tell_interval()
            except Exception:
                self.log.exception("housekeeping_failed")

    async def on_detach(self, node_id: str, epoch: int, reason: str) -> None:
        node = self.nodes.get(node_id)
        if node is None or node.epoch != epoch or not node.attached:
            return
        node.attached = False
        node.last_seen_ms = now_ms()
        self.log_reads.node_gone(node_id)
        self.coord.node_down(node_id, epoch)
        await self.store.node_detached(node_id, epoch, node.last_seen_ms)
        self.log.info("node_gone", node=node_id, epoch=epoch, reason=reason,
                      running=len(node.running))
        if node.running:
            self._start_grace(node_id, epoch)

    async def shard_down(self, shard: int) -> None:
        self._fenced.pop(shard, None)  # its sessions died with it
        for node in list(self.nodes.values()):
            if node.attached and node.shard == shard:
                await self.on_detach(node.node_id, node.epoch, f"shard {shard} exited")

    def _start_grace(self, node_id: str, epoch: int) -> None:
        self._cancel_grace(node_id)
        loop = asyncio.get_running_loop()
        self._grace[node_id] = loop.call_later(
            self.settings.node_grace_s, lambda: self._spawn(self._grace_expired(node_id, epoch)))

    def _cancel_grace(self, node_id: str) -> None:
        if (handle := self._grace.pop(node_id, None)) is not None:
            handle.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _grace_expired(self, node_id: str, epoch: int) -> None:
        self._grace.pop(node_id, None)
        node = self.nodes.get(node_id)
        if node is None or node.attached or node.epoch != epoch:
            return
        if self.coord.clustered:
            if not self.coord.healthy:
                # Redis cannot say whether the node lives on at another host: never
                # guess "gone" (that would mark a live node's tasks LOST); ask again later.
                self._start_grace(node_id, epoch)
                return
            if not await self._still_gone(node_id, epoch):
                return
        for task in await self.store.tasks_in(ACTIVE, node_id):
            await self._finish(task, State.LOST,
                               reason=f"node missed its grace of {self.settings.node_grace_s} s")
        node.running.clear()

    async def _still_gone(self, node_id: str, epoch: int) -> bool:
        """Clustered: is session ``epoch`` still the node's newest, and not attached at a
        live host? (It may have re-attached anywhere: then that host owns its tasks.)"""
        rows = [r for r in await self.store.list_nodes() if r.node_id == node_id]
        if rows and rows[0].session_epoch != epoch:
            return False
        entry = await self.coord.lookup(node_id)
        return not (entry is not None and entry.epoch >= epoch
                    and entry.host in await self.coord.live_hosts()
                    and entry.host != self.coord.host_id)

    # -- node frames --------------------------------------------------------------

    async def on_frame(self, node_id: str, epoch: int, raw: bytes) -> None:
        await self._on_node_frame(node_id, epoch, node_pb2.NodeFrame.FromString(raw), deque())

    async def _on_node_frame(self, node_id: str, epoch: int, frame: node_pb2.NodeFrame,
                             later: deque[Pending]) -> None:
        """``later``: the node's frames received after this one (not handled yet)."""
        node = self.nodes.get(node_id)
        if node is None:
            return
        if node.epoch == epoch and not node.attached:
            self.fenced_frames += 1  # its shard lost its lease: the store will refuse it
        kind = frame.WhichOneof("kind")
        if kind == "output":
            # When the task's finished frame is already here, its FinishedAck (sent
            # after the terminal state is durable) ends the task at the node, which
            # then needs no OutputAck: one frame less through ring, shard and stream.
            await self._on_output(node, epoch, frame.output,
                                  ack=not _finished_follows(frame.output, later))
        elif kind == "started":
            await self._on_started(node, epoch, frame.started)
        elif kind == "finished":
            await self._on_finished(node, epoch, frame.finished)
        elif kind == "rejected":
            await self._on_rejected(node, epoch, frame.rejected)
        elif kind == "progress":
            self._on_progress(node, epoch, frame.progress)
        elif kind == "prompt":
            self._on_prompt(node, epoch, frame.prompt)
        elif kind == "log_chunk" and node.epoch == epoch:
            self.log_reads.deliver(node_id, frame.log_chunk)
        elif kind == "draining" and node.epoch == epoch:
            node.draining = True
            self.log.info("node_draining", node=node_id, reason=frame.draining.reason)

    async def _kill_stray(self, node: NodeState, epoch: int, task_id: str, attempt: int,
                          why: str) -> None:
        if node.epoch == epoch and node.attached:
            await self.send_node(node, node_pb2.HubFrame(cancel=node_pb2.CancelTask(
                task_id=task_id, attempt=attempt, reason=why)))

    async def _on_output(self, node: NodeState, epoch: int, out: node_pb2.TaskOutput,
                         ack: bool = True) -> None:
        if not is_task_id(out.task_id):
            return
        try:
            before, after = await self.store.append_output(out.task_id, out.attempt, epoch,
                                                           out.offset, out.data)
        except StaleWrite:
            await self._kill_stray(node, epoch, out.task_id, out.attempt,
                                   "output for a superseded attempt")
            return
        self._ends.pop(out.task_id, None)  # re-inserted last: the oldest leave first
        self._ends[out.task_id] = (out.attempt, after)
        if len(self._ends) > MAX_KNOWN_ENDS:
            del self._ends[next(iter(self._ends))]
        if after > before:
            fresh = out.data[before - out.offset:]
            self.publish(out.task_id, ("output", (out.attempt, before, fresh)))
            await self.journals.appended(out.task_id, out.attempt, before, fresh)
        if ack and node.epoch == epoch:
            await self.send_node(node, node_pb2.HubFrame(ack=node_pb2.OutputAck(
                task_id=out.task_id, attempt=out.attempt, offset=after)))

    def _on_progress(self, node: NodeState, epoch: int, p: node_pb2.TaskProgress) -> None:
        if node.epoch == epoch and p.task_id in node.running:  # bounded by running tasks
            self.progress[p.task_id] = (p.attempt, p.spooled_bytes, p.held_back_bytes)

    def _on_prompt(self, node: NodeState, epoch: int, ev: node_pb2.PromptEvent) -> None:
        """The node's edge detector saw a prompt: remember it, wake the task's watchers."""
        if node.epoch != epoch or ev.task_id not in node.running:
            return
        self.prompts.pop(ev.task_id, None)
        self.prompts[ev.task_id] = ev
        while len(self.prompts) > MAX_LAST_PROMPTS:
            self.prompts.popitem(last=False)
        self.publish(ev.task_id, ("prompt", ev))

    def last_prompt(self, task_id: str, attempt: int) -> node_pb2.PromptEvent | None:
        ev = self.prompts.get(task_id)
        return ev if ev is not None and ev.attempt == attempt else None

    def task_progress(self, task_id: str, attempt: int) -> tuple[int, int]:
        """(spooled, held back) as the node last reported them for this attempt."""
        held = self.progress.get(task_id)
        return (held[1], held[2]) if held is not None and held[0] == attempt else (0, 0)

    async def _on_started(self, node: NodeState, epoch: int, st: node_pb2.TaskStarted) -> None:
        if not is_task_id(st.task_id):
            return
        try:
            row = await self.store.transition(st.task_id, attempt=st.attempt, node_epoch=epoch,
                                              to=State.RUNNING, now_ms=now_ms())
        except StaleWrite:
            task = await self.store.get_task(st.task_id)
            if task is None or task.attempt != st.attempt or task.state.terminal:
                await self._kill_stray(node, epoch, st.task_id, st.attempt,
                                       "attempt superseded")
            return
        self.publish(row.task_id, ("state", row))

    async def _on_finished(self, node: NodeState, epoch: int, fin: node_pb2.TaskFinished) -> None:
        if not is_task_id(fin.task_id):
            return
        if fin.output and len(fin.output) <= fin.output_end:  # issue 9: folded output
            await self._on_output(node, epoch, node_pb2.TaskOutput(
                task_id=fin.task_id, attempt=fin.attempt, data=fin.output,
                offset=fin.output_end - len(fin.output)), ack=False)
        state = finished_state(fin.kind, fin.exit_code, False)
        reason = fin.reason
        if (self._ends.pop(fin.task_id, None) == (fin.attempt, fin.output_end)
                and state is finished_state(fin.kind, fin.exit_code, True)):
            # This hub made the attempt's output durable up to the node's end and a
            # cancel request would not change the state: no read needed (the
            # transition below is conditional on attempt and epoch as always).
            known = True
        else:
            task = await self.store.get_task(fin.task_id)
            known = task is not None
            if task is not None:
                state = finished_state(fin.kind, fin.exit_code, task.cancel_requested)
                if task.attempt == fin.attempt and task.output_bytes != fin.output_end:
                    reason = (f"{reason}; " if reason else "") + (
                        f"hub holds {task.output_bytes} of {fin.output_end} output bytes")
        if known:
            try:
                row = await self.store.transition(
                    fin.task_id, attempt=fin.attempt, node_epoch=epoch, to=state,
                    exit_code=fin.exit_code, reason=reason, now_ms=now_ms())
            except StaleWrite as e:
                self.log.info("late_result_rejected", task=fin.task_id, attempt=fin.attempt,
                              epoch=epoch, why=str(e))
            else:
                node.running.discard(row.task_id)
                self.progress.pop(row.task_id, None)
                self.publish(row.task_id, ("state", row))
                self.kick()
        if node.epoch == epoch and node.attached:  # never ack through a fenced session
            await self.send_node(node, node_pb2.HubFrame(finished_ack=node_pb2.FinishedAck(
                task_id=fin.task_id, attempt=fin.attempt)))

    async def _on_rejected(self, node: NodeState, epoch: int, rej: node_pb2.TaskRejected) -> None:
        self.log.warning("envelope_rejected", node=node.node_id, task=rej.task_id,
                         attempt=rej.attempt, code=rej.code, reason=rej.reason)
        task = await self.store.get_task(rej.task_id) if is_task_id(rej.task_id) else None
        if task is None or task.attempt != rej.attempt or task.node_epoch != epoch:
            return
        node.running.discard(task.task_id)
        if rej.code == "draining":
            node.draining = True
        retry = rej.code in RETRYABLE_REJECTIONS and task.attempt < self.settings.max_attempts
        target = State.QUEUED if retry else State.FAILED
        try:
            row = await self.store.transition(
                task.task_id, attempt=task.attempt, node_epoch=epoch, to=target,
                reason=f"node {node.node_id} refused the envelope: {rej.code}: {rej.reason}",
                now_ms=now_ms())
        except StaleWrite:
            return
        if retry:
            self.queue[row.task_id] = row
            self.kick()
        self.publish(row.task_id, ("state", row))

    async def _finish(self, task: TaskRow, state: State, reason: str) -> None:
        try:
            row = await self.store.transition(task.task_id, attempt=task.attempt,
                                              node_epoch=task.node_epoch, to=state,
                                              reason=reason, now_ms=now_ms())
        except StaleWrite:
            return
        if (node := self.nodes.get(task.node_id)) is not None:
            node.running.discard(task.task_id)
        self.progress.pop(task.task_id, None)
        self._ends.pop(task.task_id, None)
        self.publish(row.task_id, ("state", row))

    # -- scheduling -----------------------------------------------------------------

    def kick(self) -> None:
        self._kick.set()

    async def run_scheduler(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self._schedule_pass()
            except Exception:
                self.log.exception("schedule_pass_failed")

    async def _schedule_pass(self) -> None:
        if not self.queue:  # most kicks (a task ended) find nothing queued: skip O(nodes)
            return
        local = [n for n in self.nodes.values() if n.attached and not n.draining]
        if not local:
            if self.coord.clustered:
                self._offer_soon(list(self.queue.values())[:MAX_OFFERS_PER_PASS])
            return
        placed: list[tuple[TaskRow, NodeState]] = []
        unplaced: list[TaskRow] = []
        placer = Placer(local, _running)  # the nodes themselves: no copy per pass
        for task in list(self.queue.values()):
            if len(placed) >= MAX_PLACEMENTS_PER_PASS:
                self.kick()  # more next pass
                break
            node = placer.pick(task.selector, task.node_pin, task.tool)
            if node is None:
                unplaced.append(task)
                continue
            self._picks += 1
            node.last_picked = self._picks
            node.running.add(task.task_id)
            placer.placed(node)
            del self.queue[task.task_id]
            self.hops.pop(task.task_id, None)
            placed.append((task, node))
        if unplaced and self.coord.clustered:
            self._offer_soon(unplaced[:MAX_OFFERS_PER_PASS])
        # All of a pass's QUEUED -> ASSIGNED writes are in flight together, so they
        # share one group commit instead of one commit (and thread hop) each.
        rows = await asyncio.gather(*(self._assign(task, node) for task, node in placed))
        await self._dispatch_envelopes([(row, node) for row, (_, node) in zip(rows, placed,
                                                                             strict=True)
                                        if row is not None])

    async def _assign(self, task: TaskRow, node: NodeState) -> TaskRow | None:
        try:
            row = await self.store.transition(
                task.task_id, attempt=task.attempt, node_epoch=0, to=State.ASSIGNED,
                new_attempt=True, node_id=node.node_id, new_node_epoch=node.epoch,
                now_ms=now_ms())
        except StaleWrite:  # cancelled meanwhile, or the node's session moved on
            node.running.discard(task.task_id)
            fresh = await self.store.get_task(task.task_id)
            if fresh is not None and fresh.state is State.QUEUED:
                self.queue[task.task_id] = fresh
            return None
        except Exception:
            # Outcome unknown: queue it again (no kick, so a failing store is not retried
            # in a loop). If the write did commit, the retry is refused as stale and the
            # ASSIGNED task is sent when its node re-attaches (at-least-once dispatch).
            node.running.discard(task.task_id)
            self.queue[task.task_id] = task
            self.log.exception("assign_failed", task=task.task_id, node=node.node_id)
            return None
        self.publish(row.task_id, ("state", row))
        return row

    def _offer_soon(self, tasks: list[TaskRow]) -> None:
        """Offer in the background, one round at a time: a slow or hung Redis must not
        hold up placing tasks on this host's own nodes."""
        if self._offering is None or self._offering.done():
            self._offering = asyncio.get_running_loop().create_task(self._offer_remote(tasks))

    async def _offer_remote(self, tasks: list[TaskRow]) -> None:
        """Offer tasks no local node can take to a host whose node can (directory hint).

        The receiving host re-reads the task and schedules it onto its own node with
        the usual conditional write; if the offer is lost, the task is still QUEUED
        in the store and a queue scan adopts it again. Tasks nobody could take are
        tried again soon (a node may just have attached elsewhere), backing off to
        ``OFFER_RETRY_MAX_S`` while nothing can be offered.
        """
        offered = await self._offer_round(tasks)
        self._offer_retry_s = (OFFER_RETRY_MIN_S if offered
                               else min(self._offer_retry_s * 2, OFFER_RETRY_MAX_S))
        waiting = any(t.task_id in self.queue for t in tasks)
        if waiting and (self._offer_retry is None or self._offer_retry.cancelled()
                        or self._offer_retry.when() <= asyncio.get_running_loop().time()):
            self._offer_retry = asyncio.get_running_loop().call_later(self._offer_retry_s,
                                                                      self.kick)

    async def _offer_round(self, tasks: list[TaskRow]) -> int:
        directory = await self.coord.directory(max_age_s=self._offer_retry_s / 2)
        if not directory:
            return 0
        live = await self.coord.live_hosts()
        me = self.coord.host_id
        remote = {nid: (e, Candidate(nid, e.labels, max(e.capacity, 1), e.running, True,
                                     e.draining))
                  for nid, e in directory.items() if e.host != me and e.host in live}
        cands = [c for _, c in remote.values()]
        offers: list[tuple[str, Message]] = []
        for task in tasks if cands else ():
            hops = self.hops.get(task.task_id, 0)
            if hops >= MAX_OFFER_HOPS or task.task_id not in self.queue:
                continue
            cand = pick(cands, task.selector, task.node_pin, task.tool)
            if cand is None:
                continue
            cand.running += 1
            offers.append((remote[cand.node_id][0].host, ["offer", task.task_id, hops + 1]))
        if offers and await self.coord.send_many(offers):
            for _, msg in offers:
                self.queue.pop(msg[1], None)
                self.hops.pop(msg[1], None)
        return len(offers)

    async def _dispatch_envelopes(self, batch: list[tuple[TaskRow, NodeState]]) -> None:
        if not batch:
            return
        requests = [EnvelopeRequest(t.task_id, t.attempt, n.node_id, t.node_epoch, t.tenant,
                                    spec_of(t)) for t, n in batch]
        frames = await self.encoder.encode(requests)
        for (task, node), frame in zip(batch, frames, strict=True):
            if node.attached and node.epoch == task.node_epoch:
                await self.send_node(node, frame)

    # -- coordination with other hub hosts (clustered only) ----------------------------

    async def on_message(self, msg: Message) -> None:
        """A message from another hub host (at-least-once: every branch is idempotent)."""
        kind = msg[0]
        if kind == "offer":
            task_id, hops = str(msg[1]), int(msg[2])
            if task_id in self.queue or not is_task_id(task_id):
                return
            row = await self.store.get_task(task_id)
            if row is not None and row.state is State.QUEUED:
                self.queue[task_id] = row
                self.hops[task_id] = hops
                self.kick()
        elif kind in ("cancel", "input"):
            task_id, attempt = str(msg[1]), int(msg[2])
            task = await self.store.get_task(task_id) if is_task_id(task_id) else None
            if task is None or task.attempt != attempt or task.state not in ACTIVE:
                return
            node = self.nodes.get(task.node_id)
            if node is None or not node.attached:
                return
            frame = (node_pb2.HubFrame(cancel=node_pb2.CancelTask(
                task_id=task_id, attempt=attempt, reason=str(msg[3]))) if kind == "cancel"
                else node_pb2.HubFrame(input=node_pb2.TaskInput(
                    task_id=task_id, attempt=attempt, data=bytes(msg[3]))))
            await self.send_node(node, frame)
        elif kind == "close":
            node_id, epoch = str(msg[1]), int(msg[2])
            node = self.nodes.get(node_id)
            if node is not None and node.epoch == epoch and node.attached:
                self.log.info("node_moved", node=node_id, epoch=epoch)
                await self._to_shard(node.shard, m.pack(m.CLOSE, node_id, epoch,
                                                        "the node attached to another hub"))
        elif kind == "watch":
            task_id, host, seconds = str(msg[1]), str(msg[2]), float(msg[3])
            if task_id in self.remote_watch or len(self.remote_watch) < MAX_REMOTE_WATCHED:
                self.remote_watch.setdefault(task_id, {})[host] = time.monotonic() + seconds
        elif kind == "event":
            self._remote_event(str(msg[1]), msg[2:])

    def _remote_event(self, task_id: str, ev: list[Any]) -> None:
        """An event of a task on another host, for watchers here."""
        if ev[0] == "state":
            self.watchers.publish(task_id, ("state", unpack_row(ev[1])))
        elif ev[0] == "output":
            self.watchers.publish(task_id, ("output", (int(ev[1]), int(ev[2]), bytes(ev[3]))))
        elif ev[0] == "prompt":
            self.watchers.publish(task_id, ("prompt", node_pb2.PromptEvent.FromString(ev[1])))

    async def watch_remote(self, task_id: str) -> None:
        """Ask every other host to send this host a task's events (a Watch here)."""
        if self.coord.clustered:
            await self.coord.broadcast(["watch", task_id, self.coord.host_id, REMOTE_WATCH_S])

    async def run_coordination(self) -> None:
        """Leases and directory upkeep every TTL/3; the janitor and the queue scan every
        ``queue_scan_s`` in a loop of their own. The lease loop never waits for the store
        (fencing runs beside it), so a PostgreSQL outage cannot make this host's leases
        lapse."""
        scans = asyncio.get_running_loop().create_task(self._scan_loop())
        try:
            await self._lease_loop()
        finally:
            scans.cancel()

    async def _lease_loop(self) -> None:
        period = self.settings.lease_ttl_ms / 3000
        beats: dict[int, tuple[int, float]] = {}
        lease_ok: dict[int, bool] = {}
        while True:
            try:
                now = time.monotonic()
                alive = set()
                for index, link in self.links.items():
                    beat = link.rx.producer_heartbeat
                    last = beats.get(index)
                    if last is None or last[0] != beat:
                        beats[index] = last = (beat, now)
                    ok = now - last[1] < self.settings.lease_ttl_ms / 1000
                    if ok:
                        alive.add(index)
                        if not lease_ok.get(index, True):
                            self._spawn(self._close_fenced(index))
                    elif lease_ok.get(index, True):
                        self._fencing[index] = asyncio.get_running_loop().create_task(
                            self.shard_lease_lost(index))
                    lease_ok[index] = ok
                if await self.coord.renew(alive, self._shard_reports()):
                    self.log.warning("coordination_flushed", republish=sum(
                        n.attached for n in self.nodes.values()))
                    for node in self.nodes.values():
                        node.published_running = -1
                self._publish_directory()
                self._prune_remote_watch(now)
                if self.queue:
                    self.kick()
            except Exception:
                self.log.exception("coordination_pass_failed")
            await asyncio.sleep(period)

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.queue_scan_s)
            try:
                await self._janitor()
                await self._scan_queue()
            except Exception:
                self.log.exception("coordination_scan_failed")

    def _prune_remote_watch(self, now: float) -> None:
        """Forget watch interest nobody renewed (a Watch on another host ended)."""
        for task_id in [t for t, hosts in self.remote_watch.items()
                        if all(until < now for until in hosts.values())]:
            del self.remote_watch[task_id]

    def _shard_reports(self) -> list[ShardReport]:
        counts: dict[int, int] = {}
        for n in self.nodes.values():
            if n.attached:
                counts[n.shard] = counts.get(n.shard, 0) + 1
        return [ShardReport(self.coord.host_id, i, info.pid, info.alive, info.restarts,
                            counts.get(i, 0), info.frames_in, info.frames_out)
                for i, info in sorted(self.shards.items())]

    def _publish_directory(self) -> None:
        for node in self.nodes.values():
            if node.attached and node.published_running != len(node.running):
                node.published_running = len(node.running)
                self.coord.node_up(self.dir_entry(node), node.node_id)

    async def shard_lease_lost(self, shard: int) -> None:
        """A shard stopped beating (paused, hung) past its lease: fence its sessions.

        Each of its nodes is detached and the node's active tasks are moved to a
        fresh epoch that no session holds, so whatever the shard forwards when it
        resumes is refused by the store (and recorded); the node re-attaches
        (here or at another host) and reconciliation rebinds its tasks.
        """
        fenced = [n for n in self.nodes.values() if n.attached and n.shard == shard]
        self.log.warning("shard_lease_lost", shard=shard, nodes=len(fenced))
        for node in fenced:
            await self.fence(node, f"shard {shard} lost its lease")

    async def fence(self, node: NodeState, reason: str) -> None:
        epoch = node.epoch
        await self.on_detach(node.node_id, epoch, reason)
        fence_epoch = await self.store.mint_epoch()
        for task in await self.store.tasks_in(ACTIVE, node.node_id):
            if task.node_epoch == epoch:
                await self.store.rebind_epoch(task.task_id, task.attempt, node.node_id,
                                              fence_epoch)
        # The session is closed when the shard beats again (or dies): until then what
        # it forwards is refused by the store, and recorded.
        self._fenced.setdefault(node.shard, []).append((node.node_id, epoch))

    async def _close_fenced(self, shard: int) -> None:
        if (fencing := self._fencing.pop(shard, None)) is not None:
            await asyncio.gather(fencing, return_exceptions=True)  # every session fenced
        sessions = self._fenced.pop(shard, [])
        self.log.warning("shard_lease_regained", shard=shard, closing=len(sessions),
                         refused_frames=self.fenced_frames)
        for node_id, epoch in sessions:
            await self._to_shard(shard, m.pack(m.CLOSE, node_id, epoch,
                                               "its shard lost its lease"))

    async def _janitor(self) -> None:
        """Take over nodes the store says are attached at a host that is gone.

        Seen orphaned on two passes in a row (a flushed directory is republished
        well within one), such a node is marked detached and gets the grace
        period here; if it re-attaches anywhere, that host's epoch wins.
        """
        if not self.coord.healthy:
            self._suspects.clear()  # what Redis said before the outage is no evidence
            return
        directory = await self.coord.directory(max_age_s=0)
        live = await self.coord.live_hosts()
        if not self.coord.healthy:
            return
        me = self.coord.host_id
        for row in await self.store.list_nodes():
            local = self.nodes.get(row.node_id)
            if not row.attached or (local is not None and local.attached):
                self._suspects.pop(row.node_id, None)
                continue
            entry = directory.get(row.node_id)
            if entry is not None and entry.host != me and entry.host in live \
                    and entry.epoch >= row.session_epoch:
                self._suspects.pop(row.node_id, None)
                continue
            if self._suspects.get(row.node_id) != row.session_epoch:
                self._suspects[row.node_id] = row.session_epoch
                continue
            del self._suspects[row.node_id]
            if not await self.store.node_detached(row.node_id, row.session_epoch, now_ms()):
                continue
            self.log.warning("node_orphaned", node=row.node_id, epoch=row.session_epoch,
                             host=entry.host if entry else None)
            if local is None or local.epoch <= row.session_epoch:
                self.nodes[row.node_id] = NodeState(
                    row.node_id, row.session_epoch, row.shard, row.labels, row.capacity,
                    row.agent_version, attached=False, last_seen_ms=now_ms())
            self._start_grace(row.node_id, row.session_epoch)

    async def _scan_queue(self) -> None:
        """Adopt tasks QUEUED in the store that no host seems to hold (a lost offer, a
        dead host). Two hosts holding one task is safe: one conditional write wins."""
        cutoff = now_ms() - int(self.settings.queue_scan_s * 1000)
        adopted = 0
        for row in await self.store.list_tasks(State.QUEUED, "", 1000):
            if row.task_id not in self.queue and row.updated_ms < cutoff \
                    and len(self.queue) < self.settings.max_queued_tasks:
                self.queue[row.task_id] = row
                self.hops.pop(row.task_id, None)
                adopted += 1
        if adopted:
            self.log.info("queue_adopted", tasks=adopted)
            self.kick()

    # -- Control API operations -------------------------------------------------------

    async def submit(self, task: TaskRow) -> tuple[TaskRow, bool]:
        if len(self.queue) >= self.settings.max_queued_tasks:
            raise RequestError("RESOURCE_EXHAUSTED",
                               f"queue is full ({self.settings.max_queued_tasks} tasks)")
        row, created = await self.store.create_task(task)
        if created:
            self.queue[row.task_id] = row
            self.publish(row.task_id, ("state", row))
            self.kick()
        return row, not created

    async def get(self, task_id: str) -> TaskRow:
        if not is_task_id(task_id):
            raise RequestError("INVALID_ARGUMENT", f"{task_id!r} is not a task id")
        task = await self.store.get_task(task_id)
        if task is None:
            raise RequestError("NOT_FOUND", f"task {task_id} not found")
        return task

    async def cancel(self, task_id: str, reason: str) -> TaskRow:
        task = await self.get(task_id)
        if task.state.terminal:
            raise RequestError("FAILED_PRECONDITION", f"task {task_id} is already "
                               f"{task.state.value}")
        if task.state is State.QUEUED:
            try:
                row = await self.store.transition(task_id, attempt=task.attempt, node_epoch=0,
                                                  to=State.CANCELLED, reason=reason or
                                                  "cancelled while queued", now_ms=now_ms())
            except StaleWrite:
                return await self.cancel(task_id, reason)  # it was placed meanwhile
            self.queue.pop(task_id, None)
            self.publish(task_id, ("state", row))
            return row
        cancelled = await self.store.request_cancel(task_id)
        assert cancelled is not None
        row = cancelled
        node = self.nodes.get(row.node_id)
        if node is not None and node.attached and row.state in ACTIVE:
            await self.send_node(node, node_pb2.HubFrame(cancel=node_pb2.CancelTask(
                task_id=task_id, attempt=row.attempt, reason=reason or "cancel requested")))
        elif row.state in ACTIVE and (host := await self._remote_host(row.node_id)):
            await self.coord.send(host, ["cancel", task_id, row.attempt,
                                         reason or "cancel requested"])
        return row

    async def _remote_host(self, node_id: str) -> str | None:
        """The live host another hub says a node is attached to, if any."""
        if not self.coord.clustered:
            return None
        entry = await self.coord.lookup(node_id)
        if entry is None or entry.host == self.coord.host_id:
            return None
        return entry.host if entry.host in await self.coord.live_hosts() else None

    async def send_input(self, task_id: str, data: bytes) -> int:
        task = await self.get(task_id)
        if task.state not in ACTIVE:
            raise RequestError("FAILED_PRECONDITION",
                               f"task {task_id} is {task.state.value}; input needs a running task")
        node = self.nodes.get(task.node_id)
        if node is None or not node.attached:
            if host := await self._remote_host(task.node_id):
                await self.coord.send(host, ["input", task_id, task.attempt, data])
                return task.attempt
            raise RequestError("UNAVAILABLE", f"node {task.node_id} is not attached; retry later")
        await self.send_node(node, node_pb2.HubFrame(input=node_pb2.TaskInput(
            task_id=task_id, attempt=task.attempt, data=data)))
        return task.attempt
