"""The tasks this node holds: admission, processes, spools, and the hub's task frames.

The link (one stream) calls in with what the hub said and pulls out what to send
(:meth:`TaskHost.next_frame`); the task processes call in with output and exits. All on
one event loop, so no locks. Invariants:

- Nothing runs before :func:`nodeagent.admission.admit` accepted its envelope and the
  attempt was durably recorded in the ran log.
- Every output byte is in the spool before the table may offer it; frames are read back
  from the spool, so a resend after reconnect is byte-identical.
- A task leaves the table only on ``FinishedAck`` or ``KILL``; what then becomes of its
  spool: :mod:`nodeagent.spools`.
- A task's ``TaskStarted`` is queued before any of its output can be offered; what is
  sent, in which order, and folding (issue 9): :mod:`nodeagent.outbox`.
- Every task is run by its tool (:mod:`nodeagent.tools`) through the per-attempt contract
  of :mod:`nodeagent.attempt`. A tool that raises, or whose ``done`` fails, ends its task
  (exit 70, the error as reason); it never reaches the agent's loop.
"""

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import Any

import cortex
from cortex.envelope import EnvelopeVerifier
from cortex.v1 import node_pb2, nodecall_pb2
from nodeagent import procgroup
from nodeagent.admission import Rejection, admit
from nodeagent.attempt import AttemptEvents, cannot_start, exit_of, tool_task
from nodeagent.browsertool import TOOL as BROWSER_TOOL
from nodeagent.browsertool import BrowserTool
from nodeagent.cgroup import PROCESS_GROUP, CgroupTree, Limits, TaskCgroup
from nodeagent.config import AgentConfig
from nodeagent.detect.live import TaskPrompts
from nodeagent.errors import NodeAgentError, SpoolError
from nodeagent.outbox import Outbox
from nodeagent.pacing import StreamPacer
from nodeagent.ranlog import RanLog
from nodeagent.runner import TaskExit
from nodeagent.runners import Runners
from nodeagent.spool import TaskSpool
from nodeagent.spools import AttemptSpools
from nodeagent.taskfiles import TaskFiles
from nodeagent.tasktable import TaskEntry, TaskKey, TaskTable
from nodeagent.tools.base import EX_DATAERR, EX_SOFTWARE, TaskRunner, ToolError
from nodeagent.tools.registry import ToolInputError, ToolSet, load_tools

SPAWN_FAILED_EXIT = 127


class TaskHost:
    def __init__(self, config: AgentConfig, verifier: EnvelopeVerifier, ranlog: RanLog,
                 log: Any, tools: ToolSet | None = None) -> None:
        self.config = config
        self.tools = tools if tools is not None else load_tools(log=log)
        self._verifier = verifier
        self._ranlog = ranlog
        self._log = log
        self.table = TaskTable(window_bytes=config.output_window_bytes,
                               max_frame_bytes=config.max_output_frame_bytes)
        self.spools = AttemptSpools(config, log)
        self.tasks_dir = self.spools.tasks_dir
        self.retained = self.spools.retained  # finished and acknowledged, kept for reads
        self._spools = self.spools.live
        self._procs = Runners()
        self._starting: set[TaskKey] = set()  # in a worker that has not said `started`
        self.wake = asyncio.Event()  # set whenever next_frame() may have something new
        # Prompt events go on the control queue: ahead of output the rate limit holds back.
        self.prompts = TaskPrompts(self._queue_prompt)
        self.pacer = StreamPacer(
            rate_bytes_s=config.stream_rate_bytes_s, burst_bytes=config.stream_burst_bytes,
            catchup_rate_bytes_s=config.catchup_rate_bytes_s,
            catchup_burst_bytes=config.catchup_burst_bytes, wake=self.wake)
        self.changed = asyncio.Event()  # set whenever a task finishes or leaves the table
        self.cgroups: CgroupTree | None = None  # opened by the agent at start
        self.session_epoch = 0
        self.draining = False
        self.files = TaskFiles(config.state_dir, log)  # artifacts (taskfiles.py)
        self.counts = collections.Counter[str]()
        self.outbox = Outbox(config, self.table, self._spools, self.pacer, self.counts,
                             self.wake)
        # Tools answering the hub's NodeCalls (nodeagent/browsertool.py), and their labels.
        self.browser: BrowserTool | None = None

    # ---- start-up -----------------------------------------------------------

    def adopt(self, spools: list[TaskSpool]) -> None:
        """Hold the finished attempts an earlier agent left (see :mod:`recovery`)."""
        for spool in spools:
            meta = spool.meta
            key = (meta.task_id, meta.attempt)
            if meta.retained_at is not None:  # acknowledged: kept for reads only
                self.spools.keep_for_reads(spool)
                continue
            self.table.add(TaskEntry(meta.task_id, meta.attempt, output_end=spool.end,
                                     acked=min(meta.acked_offset, spool.end)))
            self.table.finished(key, exit_code=meta.exit_code or 0, reason=meta.reason,
                                kind=node_pb2.FinishKind.Value(meta.kind or "FINISH_KIND_LOST"))
            self._spools[key] = spool

    # ---- session ------------------------------------------------------------

    @property
    def verifier(self) -> EnvelopeVerifier:
        return self._verifier

    def hello(self, boot_id: int) -> node_pb2.NodeFrame:
        c = self.config
        tools, problems = self.tools.hello()
        if self.browser is not None and all(t.name != BROWSER_TOOL for t in tools):
            tools.append(self.browser.tool_info())  # answered through NodeCall, not tasks
        return node_pb2.NodeFrame(hello=node_pb2.Hello(
            node_id=c.node_id, capacity=c.capacity, labels=dict(c.labels),
            agent_version=cortex.__version__, boot_id=boot_id, tasks=self.table.reports(),
            isolation=self.cgroups.mode if self.cgroups else PROCESS_GROUP,
            tools=tools, tool_problems=problems))

    def welcome(self, welcome: node_pb2.Welcome) -> None:
        """A new session: adopt its epoch and apply its verdicts."""
        self.outbox.new_session(welcome.fold_frames)
        self.session_epoch = welcome.session_epoch
        self.table.new_session()
        self.pacer.new_session()
        outcome = self.table.apply_verdicts(welcome.verdicts)
        for key, asked, held in outcome.clamped:
            self._log.warning("resume_offset_clamped", task=key[0], attempt=key[1],
                              resume_offset=asked, output_end=held)
        for key in outcome.killed:
            self._drop(key, "hub verdict KILL")
        if self.draining:
            self.queue(node_pb2.NodeFrame(draining=node_pb2.Draining(reason="shutting down")))
        self.wake.set()

    def _queue_prompt(self, frame: node_pb2.NodeFrame) -> None:
        self.counts["prompts"] += 1
        with contextlib.suppress(NodeAgentError):  # a full control queue: drop, not crash
            self.queue(frame)

    def queue(self, frame: node_pb2.NodeFrame) -> None:
        self.outbox.queue(frame)

    def next_frame(self) -> node_pb2.NodeFrame | None:
        return self.outbox.next_frame()

    def progress_frames(self) -> list[node_pb2.NodeFrame]:
        """``TaskProgress`` for the tasks whose spooled / held-back bytes changed."""
        self.spools.prune_if_due()
        return self.pacer.progress(e for e in self.table
                                   if e.key not in self._starting and not e.holding)

    # ---- hub frames ---------------------------------------------------------

    def on_envelope(self, signed: node_pb2.SignedEnvelope) -> None:
        verdict = admit(self._verifier, signed, session_epoch=self.session_epoch,
                        ran=self._ranlog, running=self.table.running + self.files.staging,
                        capacity=self.config.capacity, draining=self.draining)
        if isinstance(verdict, Rejection):
            self._reject(verdict)
            return
        if (refused := cannot_start(verdict, self.tools)) is not None:
            self._reject(refused)
            return
        if self.files.wanted(verdict):  # inputs first, then _start_admitted
            self.files.stage(verdict, self._start_admitted, self._reject, lambda: self.draining)
            return
        self._start_admitted(verdict)

    def _start_admitted(self, verdict: node_pb2.TaskEnvelope) -> None:
        try:
            self._start(verdict)
        except (NodeAgentError, SpoolError) as e:
            # The node cannot record or spool the run: it must not run it. "capacity"
            # tells the hub to place the task elsewhere.
            self._log.error("task_start_failed", task=verdict.task_id, error=str(e))
            self._forget_failed_start((verdict.task_id, verdict.attempt))
            self._reject(Rejection(verdict.task_id, verdict.attempt, "capacity",
                                   f"node cannot record or spool the run: {e}"))

    def _forget_failed_start(self, key: TaskKey) -> None:
        self.spools.delete(key)
        self.table.remove(key)

    def _reject(self, r: Rejection) -> None:
        self.counts["rejected"] += 1
        self._log.warning("rejected", task=r.task_id, attempt=r.attempt, code=r.code,
                          reason=r.reason)
        self.queue(r.frame())

    def _start(self, env: node_pb2.TaskEnvelope) -> None:
        key = (env.task_id, env.attempt)
        tool_name = env.spec.tool or "shell"
        tool = self.tools.get(tool_name)
        assert tool is not None  # on_envelope rejected the others
        self._ranlog.record(env.task_id, env.attempt)  # before anything can run
        cgroup = self.cgroups.create(f"{env.task_id}-{env.attempt}", Limits(
            env.spec.memory_max_bytes, env.spec.pids_max)) if self.cgroups else None
        spool = self.spools.create(env)
        prompt_env = self.prompts.env(key, env.spec.allow_prompts)
        events = AttemptEvents(self, env, cgroup)
        self.table.admit(*key)
        if self.outbox.fold:
            self.outbox.hold(key)
        self._spools[key] = spool
        self._starting.add(key)  # no progress frame before TaskStarted
        try:
            task = tool_task(env, self.tools, self.config, prompt_env, cgroup)
            runner = self._procs.add(key, tool.runner(task, events))
            runner.start()  # reports started (now or later) or start_failed
        except ToolInputError as e:
            self._start_refused(key, events, EX_DATAERR, str(e))
        except ToolError as e:
            self._start_refused(key, events, SPAWN_FAILED_EXIT, str(e))
        except Exception as e:  # third-party code: a crash ends this task, not the agent
            self._log.error("tool_crashed", tool=tool_name, task=env.task_id,
                            attempt=env.attempt, error=repr(e))
            self._start_refused(key, events, EX_SOFTWARE,
                                f"tool {tool_name} crashed: {type(e).__name__}: {e}")
        else:
            runner.done.add_done_callback(lambda fut: self._on_exit(key, exit_of(fut, tool_name)))

    def _start_refused(self, key: TaskKey, events: AttemptEvents, code: int,
                       message: str) -> None:
        """Nothing of the task runs: report it started and ended with ``message``."""
        self._procs.pop(key)
        events.start_failed(message)
        self._on_exit(key, TaskExit(code, node_pb2.FINISH_KIND_EXITED, message))

    def attempt_start_failed(self, env: node_pb2.TaskEnvelope, cgroup: TaskCgroup | None,
                             message: str) -> None:
        """The task could not start (nothing ran); its exit is reported next."""
        self._starting.discard((env.task_id, env.attempt))
        if cgroup is not None:
            cgroup.remove()
        self.queue(node_pb2.NodeFrame(started=node_pb2.TaskStarted(
            task_id=env.task_id, attempt=env.attempt, pid=0)))
        self.attempt_output((env.task_id, env.attempt), f"nodeagent: {message}\r\n".encode())

    def attempt_started(self, env: node_pb2.TaskEnvelope, pid: int) -> None:
        """The task runs (as ``pid``, 0 for a tool without a process of its own); called
        before any of its output is delivered."""
        key = (env.task_id, env.attempt)
        self._starting.discard(key)
        spool = self._spools.get(key)
        if spool is not None and pid > 0:
            st = procgroup.proc_stat(pid)
            spool.meta.pid, spool.meta.pid_start_ticks = pid, st.start_ticks if st else 0
            with contextlib.suppress(SpoolError):
                spool.save_meta(durable=True)
        self.prompts.start(key, pid, lambda: self._procs.pty_fd(key), env.spec.cols or 200)
        self.counts["started"] += 1
        self._log.info("task_started", task=env.task_id, attempt=env.attempt, pid=pid,
                       tenant=env.tenant, tool=env.spec.tool or "shell")
        frame = node_pb2.NodeFrame(started=node_pb2.TaskStarted(
            task_id=env.task_id, attempt=env.attempt, pid=pid))
        self.outbox.started(key, frame)

    def on_ack(self, ack: node_pb2.OutputAck) -> None:
        key = (ack.task_id, ack.attempt)
        if not self.table.ack(key, ack.offset):
            return
        self.wake.set()
        entry = self.table.get(key)
        assert entry is not None
        self.spools.acked(key, entry.acked)

    def on_cancel(self, cancel: node_pb2.CancelTask) -> None:
        proc = self._procs.get((cancel.task_id, cancel.attempt))
        if proc is not None:  # a cancel for an unknown task is ignored
            self._log.info("task_cancel", task=cancel.task_id, attempt=cancel.attempt,
                           reason=cancel.reason)
            proc.cancel(node_pb2.FINISH_KIND_CANCELLED, cancel.reason or "cancelled by hub")

    def on_input(self, msg: node_pb2.TaskInput) -> None:
        proc = self._procs.get((msg.task_id, msg.attempt))
        if proc is None or not proc.write_input(msg.data):
            self._log.warning("input_dropped", task=msg.task_id, attempt=msg.attempt,
                              bytes=len(msg.data))

    def on_finished_ack(self, msg: node_pb2.FinishedAck) -> None:
        key = (msg.task_id, msg.attempt)
        entry = self.table.get(key)
        if entry is not None and entry.finished:
            spool = self._spools.pop(key, None)
            self._drop(key, None)
            if spool is not None:
                self.spools.keep_for_reads(spool)

    def on_call(self, call: nodecall_pb2.NodeCall) -> None:
        if self.browser is not None:
            self.browser.on_call(call)
            return
        with contextlib.suppress(NodeAgentError):
            self.queue(node_pb2.NodeFrame(call_reply=nodecall_pb2.NodeCallReply(
                call_id=call.call_id, eof=True, error_type="unknown_tool",
                error_message=f"this node has no tool {call.tool!r}")))

    def on_log_request(self, req: node_pb2.LogRequest) -> None:
        with contextlib.suppress(NodeAgentError):  # a full queue: the hub's read times out
            for frame in self.spools.answer(req):
                self.queue(frame)

    # ---- task events --------------------------------------------------------

    def attempt_output(self, key: TaskKey, data: bytes) -> None:
        spool = self._spools.get(key)
        if spool is None:
            return  # dropped by a KILL verdict; the process is being killed
        try:
            end = spool.append(data)
        except SpoolError as e:
            self.counts["spool_errors"] += 1
            self._log.error("spool_write_failed", task=key[0], attempt=key[1], error=str(e))
            return
        self.table.output_appended(key, end)
        self.counts["output_bytes"] += len(data)
        self.wake.set()
        self.prompts.feed(key, data, end)

    def _on_exit(self, key: TaskKey, result: TaskExit) -> None:
        self._procs.pop(key)
        if self.files.on_exit(key, lambda: self._on_exit(key, result)):
            return  # outputs are collected first (taskfiles.py)
        self._starting.discard(key)
        self.prompts.stop(key)
        self.outbox.end_hold(key)
        spool = self._spools.get(key)
        if spool is None:
            return
        kind = node_pb2.FinishKind.Name(result.kind)
        self.table.finished(key, exit_code=result.exit_code, kind=result.kind,
                            reason=result.reason)
        entry = self.table.get(key)
        if entry is not None:
            spool.meta.acked_offset = entry.acked
        with contextlib.suppress(SpoolError):
            spool.finish(exit_code=result.exit_code, kind=kind, reason=result.reason)
        self.counts["finished"] += 1
        self._log.info("task_finished", task=key[0], attempt=key[1], kind=kind,
                       exit_code=result.exit_code, output_end=spool.end, reason=result.reason)
        self.wake.set()
        self.changed.set()

    def _drop(self, key: TaskKey, kill_reason: str | None) -> None:
        """Forget a task: kill what is left of it, delete its spool, leave the table."""
        self._procs.kill(key, kill_reason or "forgotten")
        self._starting.discard(key)
        self.prompts.stop(key)
        self.outbox.end_hold(key)
        if kill_reason:
            self._log.warning("task_killed", task=key[0], attempt=key[1], reason=kill_reason)
        self.spools.delete(key)
        self.pacer.forget(key)
        self.table.remove(key)
        self.changed.set()

    # ---- shutdown -----------------------------------------------------------

    @property
    def processes(self) -> list[TaskRunner]:
        """Every task process not yet reaped, including those already dropped."""
        return self._procs.processes

    def protected_pids(self) -> set[int]:
        """Task main pids this host reaps itself; an orphan reaper must leave them alone."""
        return self._procs.protected_pids() | (
            self.browser.pids if self.browser is not None else set())

    def cancel_all(self, reason: str) -> None:
        self._procs.cancel_all(reason)

    def kill_all(self, reason: str) -> None:
        self._procs.kill_all(reason)

    async def wait_until(self, predicate: Callable[["TaskHost"], bool], timeout_s: float) -> bool:
        """Wait (event-driven) until ``predicate(self)`` holds; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True

    def close(self) -> None:
        self.pacer.close()
        self.spools.close()
        if self.cgroups is not None:
            self.cgroups.close()
