"""One simulated node on the real node protocol: what nodeagent does on the wire, no processes.

A :class:`SimNode` attaches with its own credential, sends Hello (with a
``TaskReport`` for every task it still holds), adopts the Welcome's epoch and
verdicts, heartbeats at the hub's interval, verifies every envelope with the same
``EnvelopeVerifier`` as nodeagent, and answers each task with Started, output and
Finished, honouring the hub's cumulative output acks (at most ``window_bytes``
unacknowledged per task) and its FinishedAck. The hub cannot tell it from a real node.
When the Welcome says ``fold_frames`` (issue 9), as nodeagent: an instant task sends no
Started, and its last output (up to ``FOLD_BYTES``) travels inside Finished — one frame
per task instead of three.

Invariants (the ones the fault tests check against the node's own records):

- Every (task_id, attempt) the node starts is appended to ``executed`` once; an envelope
  for an attempt already in it is refused with ``TaskRejected(code="already_ran")``,
  the code nodeagent uses, and never run again.
- A task is held (and reported in Hello) from its start until its FinishedAck or a
  KILL verdict (or no verdict: the hub gave up on it). KEEP resumes streaming at the
  hub's ``resume_offset`` and resends Finished when the task had finished.
- Addresses rotate: on a failed connect or a dropped stream the node moves to the next
  hub address after a jittered, growing delay; a ``RetryLater`` sets the delay to the
  hub's ``retry_after_ms`` (plus up to 20 % jitter) and is counted apart from failures.
"""

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from cortex.envelope import EnvelopeVerifier
from cortex.errors import EnvelopeError
from cortex.tokens import bearer
from cortex.v1 import node_pb2

ATTACH = "/cortex.v1.NodeLink/Attach"
ENC = node_pb2.NodeFrame.SerializeToString
DEC = node_pb2.HubFrame.FromString
WELCOME_TIMEOUT_S = 60.0
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 10.0
TaskKey = tuple[str, int]
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs predates grpc.aio.EOF


@dataclass
class FleetStats:
    """Counters shared by all nodes of one fleet process."""

    attached: int = 0
    ever_attached: int = 0
    attach_attempts: int = 0
    attach_failures: int = 0  # attempts that never got a Welcome (RetryLater excluded)
    retry_later: int = 0
    dropped: int = 0  # sessions that ended after a Welcome, stop excluded
    first_attach: float = 0.0
    last_attach: float = 0.0
    tasks_done: dict[str, float] = field(default_factory=dict)  # task_id -> FinishedAck time
    rejected: int = 0
    already_ran: int = 0
    killed_by_verdict: int = 0
    kept_by_verdict: int = 0
    bytes_produced: int = 0
    bytes_sent: int = 0
    bytes_acked: int = 0
    prompts_sent: int = 0
    heartbeats: int = 0  # heartbeat frames written (the hub's per-heartbeat cost is per phase)


@dataclass(frozen=True)
class Workload:
    """What every task does on a simulated node."""

    task_s: float = 0.0
    output: bytes = b"xyz"
    stream_bps: int = 0  # > 0: print at this rate for stream_s instead of task_s/output
    stream_s: float = 0.0
    stream_tick_s: float = 1.0
    prompt_every_s: float = 0.0  # > 0: a PromptEvent this often while streaming
    window_bytes: int = 1 << 20
    max_frame_bytes: int = 60 << 10
    fold: bool = True  # fold frames when the hub says it takes them (nodeagent's default)


#: The most output that travels inside TaskFinished (nodeagent.config.fold_output_bytes).
FOLD_BYTES = 16 << 10


@dataclass
class HeldTask:
    """A task the node holds: produced output, the hub's ack, what this session sent."""

    task_id: str
    attempt: int
    produced: int = 0
    acked: int = 0
    sent: int = 0
    finished: bool = False
    finish_sent: bool = False
    kind: node_pb2.FinishKind = node_pb2.FINISH_KIND_EXITED
    streaming: bool = True
    runner: "asyncio.Task[None] | None" = None

    def report(self) -> node_pb2.TaskReport:
        return node_pb2.TaskReport(task_id=self.task_id, attempt=self.attempt,
                                   acked_offset=self.acked, output_end=self.produced,
                                   finished=self.finished, exit_code=0)


class _SessionEnd(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class SimNode:
    def __init__(self, node_id: str, token: str, hubs: list[str], verifier: EnvelopeVerifier,
                 stats: FleetStats, work: Workload) -> None:
        self.node_id = node_id
        self.token = token
        self.hubs = hubs
        self.hub_index = random.randrange(len(hubs))
        self.verifier = verifier
        self.stats = stats
        self.work = work
        self.epoch = 0
        self.fold = False  # the hub's Welcome.fold_frames, and our Workload.fold
        self.interval_s = 5.0  # the heartbeat interval the hub asked for (Welcome, acks)
        self.call: Any = None
        self.lock = asyncio.Lock()
        self.held: dict[TaskKey, HeldTask] = {}
        self.executed: list[TaskKey] = []
        self._ran: set[TaskKey] = set()
        self._boot_id = int.from_bytes(os.urandom(8), "big") >> 1

    # -- connection loop -----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0  # connects in a row that got no Welcome: the backoff's exponent
        while not stop.is_set():
            self.stats.attach_attempts += 1
            retry_after: float | None = None
            try:
                await self._session(stop)
                failures = 0
            except _SessionEnd as e:
                retry_after = e.retry_after_s
                if retry_after is not None:
                    self.stats.retry_later += 1
                else:
                    self.stats.dropped += 1
                    failures = 0
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as e:
                if stop.is_set() or (isinstance(e, grpc.aio.AioRpcError)
                                     and e.code() == grpc.StatusCode.CANCELLED):
                    return
                self.stats.attach_failures += 1
                failures += 1
            if stop.is_set():
                return
            self.hub_index = (self.hub_index + 1) % len(self.hubs)
            if retry_after is not None:
                delay = retry_after * random.uniform(1.0, 1.2)
            else:
                delay = random.uniform(0.5, 1.0) * min(BACKOFF_CAP_S,
                                                       BACKOFF_BASE_S * 2 ** min(failures, 8))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _session(self, stop: asyncio.Event) -> None:
        """One attach, until ``stop``. Raises _SessionEnd("dropped") when a welcomed
        stream ends, _SessionEnd with ``retry_after_s`` on RetryLater, and grpc or
        connection errors when there was no Welcome."""
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 120_000),
                   ("grpc.http2.bdp_probe", 0)]
        hub = self.hubs[self.hub_index]
        async with grpc.aio.insecure_channel(hub, options=options) as channel:
            attach: Any = channel.stream_stream(ATTACH, request_serializer=ENC,
                                                response_deserializer=DEC)
            call = attach(metadata=bearer(self.token))
            hello = node_pb2.Hello(node_id=self.node_id, capacity=64, agent_version="sim",
                                   labels={"os": "linux", "sim": "1"}, boot_id=self._boot_id,
                                   isolation="process-group",
                                   tasks=[h.report() for h in self.held.values()])
            await call.write(node_pb2.NodeFrame(hello=hello))
            first: Any = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT_S)
            if first is EOF:
                raise ConnectionError("hub closed the stream before Welcome")
            kind = first.WhichOneof("kind")
            if kind == "retry_later":
                raise _SessionEnd("retry_later", first.retry_later.retry_after_ms / 1000)
            if kind != "welcome":
                raise ConnectionError(f"hub sent {kind} before Welcome")
            self._welcome(call, first.welcome)
            beat = asyncio.create_task(self._heartbeat(call, first.welcome.heartbeat_interval_ms))
            try:
                for h in list(self.held.values()):
                    await self._pump(h)
                await self._serve(call, stop)
            except (grpc.aio.AioRpcError, ConnectionError) as e:
                if stop.is_set():
                    return
                raise _SessionEnd("dropped") from e
            finally:
                self.call = None
                self.stats.attached -= 1
                beat.cancel()

    def _welcome(self, call: Any, welcome: node_pb2.Welcome) -> None:
        self.epoch = welcome.session_epoch
        self.fold = welcome.fold_frames and self.work.fold
        keep = {(v.task_id, v.attempt): v.resume_offset for v in welcome.verdicts
                if v.verdict == node_pb2.VERDICT_KEEP}
        for key, h in list(self.held.items()):
            if key not in keep:  # KILL, or no verdict: the hub gave up on it
                self._drop(key)
                self.stats.killed_by_verdict += 1
                continue
            h.acked = h.sent = min(keep[key], h.produced)
            h.finish_sent = False
            h.streaming = True
            self.stats.kept_by_verdict += 1
        self.call = call
        now = time.monotonic()
        self.stats.attached += 1
        self.stats.ever_attached += 1
        self.stats.first_attach = self.stats.first_attach or now
        self.stats.last_attach = now

    def _drop(self, key: TaskKey) -> None:
        h = self.held.pop(key, None)
        if h is not None and h.runner is not None:
            h.runner.cancel()

    async def _write(self, frame: node_pb2.NodeFrame) -> bool:
        """Write on the current session; False when there is none (or it broke)."""
        call = self.call
        if call is None:
            return False
        try:
            await call.write(frame)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return False
        return True

    async def _heartbeat(self, call: Any, interval_ms: int) -> None:
        # nodeagent's bounds on the hub's interval (50 ms .. 10 min); 0 means "not said".
        self.interval_s = min(max(interval_ms or 5000, 50), 600_000) / 1000
        seq = 0
        while True:
            await asyncio.sleep(self.interval_s * random.uniform(0.9, 1.1))
            seq += 1
            running = sum(1 for h in self.held.values() if not h.finished)
            async with self.lock:
                if await self._write(node_pb2.NodeFrame(heartbeat=node_pb2.Heartbeat(
                        seq=seq, running=running))):
                    self.stats.heartbeats += 1

    async def _serve(self, call: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            frame = await call.read()
            if frame is EOF:
                raise ConnectionError("hub closed the stream")
            kind = frame.WhichOneof("kind")
            if kind == "task":
                await self._on_envelope(frame.task)
            elif kind == "ack":
                await self._on_ack(frame.ack)
            elif kind == "finished_ack":
                self._on_finished_ack(frame.finished_ack)
            elif kind == "cancel":
                self._on_cancel(frame.cancel)
            elif kind == "retry_later":
                raise _SessionEnd("retry_later", frame.retry_later.retry_after_ms / 1000)
            elif kind == "heartbeat_ack" and frame.heartbeat_ack.interval_ms:
                # As nodeagent: the hub's interval grows with its fleet; follow it.
                self.interval_s = min(max(frame.heartbeat_ack.interval_ms, 50), 600_000) / 1000

    # -- tasks ---------------------------------------------------------------------

    async def _on_envelope(self, signed: node_pb2.SignedEnvelope) -> None:
        try:
            env = self.verifier.verify(signed, self.epoch)
        except EnvelopeError as e:
            self.stats.rejected += 1
            async with self.lock:
                await self._write(node_pb2.NodeFrame(rejected=node_pb2.TaskRejected(
                    code=e.code, reason=str(e))))
            return
        key = (env.task_id, env.attempt)
        if key in self._ran:
            self.stats.already_ran += 1
            async with self.lock:
                await self._write(node_pb2.NodeFrame(rejected=node_pb2.TaskRejected(
                    task_id=env.task_id, attempt=env.attempt, code="already_ran",
                    reason=f"attempt {env.attempt} of {env.task_id} already ran on this node")))
            return
        self._ran.add(key)
        self.executed.append(key)
        h = HeldTask(env.task_id, env.attempt)
        self.held[key] = h
        instant = not (self.work.stream_bps or self.work.task_s)
        if not (instant and self.fold):  # a folded Finished says it started
            async with self.lock:
                await self._write(node_pb2.NodeFrame(started=node_pb2.TaskStarted(
                    task_id=env.task_id, attempt=env.attempt, pid=1)))
        if not instant:
            h.runner = asyncio.create_task(self._execute(h))
        else:  # an instant task: no coroutine per task
            self._produce(h, self.work.output)
            h.finished = True
            await self._pump(h)

    def _produce(self, h: HeldTask, data: bytes | int) -> None:
        n = data if isinstance(data, int) else len(data)
        h.produced += n
        self.stats.bytes_produced += n

    async def _execute(self, h: HeldTask) -> None:
        w = self.work
        if w.stream_bps:
            start = time.monotonic()
            end = start + w.stream_s
            next_prompt = start + w.prompt_every_s if w.prompt_every_s else float("inf")
            ticks = 0
            while (now := time.monotonic()) < end:
                ticks += 1
                due = int(min(now - start + w.stream_tick_s, w.stream_s) * w.stream_bps)
                self._produce(h, max(0, due - h.produced))
                await self._pump(h)
                if now >= next_prompt:
                    next_prompt += w.prompt_every_s
                    await self._prompt(h)
                await asyncio.sleep(max(0.0, start + ticks * w.stream_tick_s - time.monotonic()))
            self._produce(h, max(0, int(w.stream_s * w.stream_bps) - h.produced))
        else:
            await asyncio.sleep(w.task_s)
            self._produce(h, w.output)
        h.finished = True
        await self._pump(h)

    async def _prompt(self, h: HeldTask) -> None:
        """A prompt event whose excerpt carries the wall-clock ns it was sent at, so a
        watcher on this machine can measure node → hub → watcher latency."""
        ns = time.time_ns()
        async with self.lock:
            if await self._write(node_pb2.NodeFrame(prompt=node_pb2.PromptEvent(
                    task_id=h.task_id, attempt=h.attempt, kind="password", detector="pattern",
                    confidence=0.9, excerpt=f"Password: sent_ns={ns}".encode(),
                    offset=h.produced, at_ms=ns // 1_000_000))):
                self.stats.prompts_sent += 1

    async def _pump(self, h: HeldTask) -> None:
        """Send what the window allows, then Finished once all output went out."""
        async with self.lock:
            if self.call is None or not h.streaming or self.held.get((h.task_id, h.attempt)) \
                    is not h:
                return
            limit = min(h.produced, h.acked + self.work.window_bytes)
            if (self.fold and h.finished and not h.finish_sent and limit == h.produced
                    and h.produced - h.sent <= FOLD_BYTES):
                await self._finish_folded(h)
                return
            while h.sent < limit:
                offset = h.sent
                n = min(self.work.max_frame_bytes, limit - offset)
                ok = await self._write(node_pb2.NodeFrame(output=node_pb2.TaskOutput(
                    task_id=h.task_id, attempt=h.attempt, offset=offset,
                    data=self.work.output[:n] if n <= len(self.work.output) else b"x" * n)))
                if not ok:
                    return
                # The hub's ack for this frame may have been handled during the write
                # (it moves ``sent`` too), so set the position, never add to it.
                h.sent = max(h.sent, offset + n)
                self.stats.bytes_sent += n
            if h.finished and not h.finish_sent and h.sent >= h.produced:
                h.finish_sent = await self._write(node_pb2.NodeFrame(
                    finished=node_pb2.TaskFinished(
                        task_id=h.task_id, attempt=h.attempt, kind=h.kind, exit_code=0,
                        output_end=h.produced)))

    async def _finish_folded(self, h: HeldTask) -> None:
        """Finished carrying the rest of the output (the caller holds the lock)."""
        n = h.produced - h.sent
        data = self.work.output[:n] if n <= len(self.work.output) else b"x" * n
        if await self._write(node_pb2.NodeFrame(finished=node_pb2.TaskFinished(
                task_id=h.task_id, attempt=h.attempt, kind=h.kind, exit_code=0,
                output_end=h.produced, output=data))):
            h.sent = h.produced
            h.finish_sent = True
            self.stats.bytes_sent += n

    async def _on_ack(self, ack: node_pb2.OutputAck) -> None:
        h = self.held.get((ack.task_id, ack.attempt))
        if h is None or ack.offset <= h.acked:
            return
        offset = min(ack.offset, h.produced)
        self.stats.bytes_acked += offset - h.acked
        h.acked = offset
        h.sent = max(h.sent, offset)
        await self._pump(h)

    def _on_finished_ack(self, ack: node_pb2.FinishedAck) -> None:
        h = self.held.pop((ack.task_id, ack.attempt), None)
        if h is not None:
            # The hub skips the last OutputAck when Finished follows the output: its
            # FinishedAck (sent after the terminal state committed, with output_end
            # checked) says the whole output is durable.
            self.stats.bytes_acked += max(0, h.produced - h.acked)
            h.acked = h.produced
        self.stats.tasks_done.setdefault(ack.task_id, time.monotonic())

    def _on_cancel(self, cancel: node_pb2.CancelTask) -> None:
        h = self.held.get((cancel.task_id, cancel.attempt))
        if h is None or h.finished:
            return
        if h.runner is not None:
            h.runner.cancel()
        h.finished, h.kind = True, node_pb2.FINISH_KIND_CANCELLED
        asyncio.create_task(self._pump(h))
