"""The Control gRPC servicer: it validates requests and converts messages; the work
is done by the hub's services (tasks.py, nodes.py, shards.py, watching.py)."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cortex.v1 import control_pb2, control_pb2_grpc
from cortexd.artifacts import ArtifactError, ArtifactsService, rules
from cortexd.control import listing
from cortexd.control.agents import Agents
from cortexd.control.errors import RequestError
from cortexd.control.hub import Hub
from cortexd.control.intake import MAX_SUBMIT_MANY, Refused
from cortexd.control.nodes import NodeView
from cortexd.control.queuewaits import node_waits
from cortexd.control.runs import cancel_dropped, wait_deadline, wait_end
from cortexd.control.shards import ShardView
from cortexd.control.submitcheck import check_submit, check_workspace
from cortexd.control.taskpb import prompt_pb, row_of, submit_result, task_pb
from cortexd.control.watchers import Watcher
from cortexd.control.watching import OutputSeen, PromptSeen, Seen, StateSeen
from cortexd.ingress.auth import Authenticator
from cortexd.journal import JournalView
from cortexd.lifecycle import State
from cortexd.store import TaskRow
from cortexd.store.monitoring import AgentTaskRow

MAX_INPUT_BYTES = 64 << 10
Ctx = grpc.aio.ServicerContext[Any, Any]


def _journal_pb(task: TaskRow, view: JournalView) -> control_pb2.Journal:
    return control_pb2.Journal(
        task_id=task.task_id, attempt=task.attempt, head=view.head, tail=view.tail,
        total_bytes=view.total_bytes, omitted_bytes=view.omitted_bytes,
        omitted_from=view.omitted_from, omitted_to=view.omitted_to)


def node_pb(n: NodeView) -> control_pb2.Node:
    return control_pb2.Node(
        node_id=n.node_id, attached=n.attached, session_epoch=n.session_epoch,
        labels=n.labels, capacity=n.capacity, running=n.running,
        agent_version=n.agent_version, shard=n.shard, last_seen_ms=n.last_seen_ms,
        draining=n.draining, isolation=n.isolation, hub_id=n.hub_id)


def shard_pb(v: ShardView) -> control_pb2.Shard:
    return control_pb2.Shard(
        shard=v.shard, pid=v.pid, alive=v.alive, nodes=v.nodes, restarts=v.restarts,
        frames_in=v.frames_in, frames_out=v.frames_out,
        ring_in_used_bytes=v.ring_in_used_bytes, ring_out_used_bytes=v.ring_out_used_bytes,
        hub_id=v.hub_id, draining=v.draining)


def watch_pb(seen: Seen) -> control_pb2.WatchEvent:
    if isinstance(seen, StateSeen):
        return control_pb2.WatchEvent(state=task_pb(seen.task, prompt=seen.prompt))
    if isinstance(seen, OutputSeen):
        return control_pb2.WatchEvent(output=control_pb2.OutputChunk(
            attempt=seen.attempt, offset=seen.offset, data=seen.data))
    if isinstance(seen, PromptSeen):
        return control_pb2.WatchEvent(prompt=prompt_pb(seen.event))
    # a monitor escalated the task to a person, or a person answered
    return control_pb2.WatchEvent(attention=seen.reason)


class ControlService(control_pb2_grpc.ControlServicer):
    artifacts: ArtifactsService | None = None  # set by the control process
    auth: Authenticator | None = None  # set by the control process: who the caller is

    def _client(self, context: Ctx) -> str:
        """The caller's credential name (from the token the interceptor checked)."""
        who = self.auth.identify(context.invocation_metadata()) if self.auth else None
        return who.name if who is not None else ""

    def __init__(self, hub: Hub, agents: Agents | None = None) -> None:
        self.hub = hub
        self.agents = agents  # monitors (cortexd/control/agents.py)
        self.waits = node_waits(hub.state)

    async def _task_files(self, request: control_pb2.SubmitRequest, row: TaskRow,
                          context: Ctx) -> None:
        """Check a submission's workspace, validate and reference its artifacts (issue
        12) onto ``row``."""
        if (no := check_workspace(self.hub.state.workspace_nodes, row.tenant, request)):
            await context.abort(getattr(grpc.StatusCode, no[0]), no[1])
        if not request.inputs and not request.outputs:
            return
        try:
            if self.artifacts is None:
                raise ArtifactError("FAILED_PRECONDITION", "this hub serves no artifacts")
            ins, outs = rules.check_task_files(
                ((i.digest.sha256, i.digest.size_bytes, i.path) for i in request.inputs),
                request.outputs, self.artifacts.max_bytes)
            await self.artifacts.pin_inputs(row.task_id, row.tenant, ins)
        except ArtifactError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), str(e))
            raise
        row.inputs, row.outputs = tuple(ins), tuple(outs)

    async def _with_outputs(self, task: control_pb2.Task) -> control_pb2.Task:
        if self.artifacts is not None and task.output_paths:
            task.outputs.extend(await self.artifacts.task_outputs(task.task_id, task.tenant))
        return task

    async def _fail(self, context: Ctx, e: RequestError) -> None:
        await context.abort(getattr(grpc.StatusCode, e.code), str(e))

    def _task_pb(self, task: TaskRow, attention: str = "") -> control_pb2.Task:
        st = self.hub.state
        out = task_pb(task, st.task_progress(task.task_id, task.attempt),
                      st.last_prompt(task.task_id, task.attempt), attention)
        if task.state is State.QUEUED:  # say why it waits (issue 13)
            wait = self.waits.explain_task(task)
            out.queue_wait, out.queue_reason = wait.code, wait.text
        return out

    async def Submit(self, request: control_pb2.SubmitRequest,  # noqa: N802
                     context: Ctx) -> control_pb2.SubmitResponse:
        if (err := check_submit(request)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err)
        row = row_of(request)
        await self._task_files(request, row, context)
        try:
            agent = (await self.agents.prepare(request, row.tenant, row.task_id,
                                               self._client(context)) if self.agents else None)
            task, dedup = await self.hub.tasks.submit(row)
            if agent is not None and self.agents is not None:
                await self.agents.register(task, agent)
        except RequestError as e:
            await self._fail(context, e)
            raise
        if dedup and task.command != request.command:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                f"idempotency key {request.idempotency_key!r} names task "
                                f"{task.task_id} with a different command")
        return control_pb2.SubmitResponse(task=task_pb(task), deduplicated=dedup)

    async def SubmitMany(self, request: control_pb2.SubmitManyRequest,  # noqa: N802
                         context: Ctx) -> control_pb2.SubmitManyResponse:
        if len(request.tasks) > MAX_SUBMIT_MANY:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"at most {MAX_SUBMIT_MANY} tasks in one SubmitMany "
                                f"(this one has {len(request.tasks)}); nothing was submitted")
        items = [self._intake_item(r) for r in request.tasks]
        caller = self._client(context)
        agents = [await self._prepare(r, item, caller) for r, item in zip(request.tasks, items,
                                                                           strict=True)]
        items = [a if isinstance(a, Refused) else item for a, item in zip(agents, items,
                                                                          strict=True)]
        outcomes = await self.hub.intake.submit_many(items)
        for agent, outcome in zip(agents, outcomes, strict=True):
            if agent is None or isinstance(agent, Refused) or self.agents is None:
                continue
            if isinstance(outcome, Refused):
                self.agents.abandon(agent)
            else:
                await self.agents.register(outcome[0], agent)
        return control_pb2.SubmitManyResponse(results=[
            submit_result(req, outcome)
            for req, outcome in zip(request.tasks, outcomes, strict=True)])

    def _intake_item(self, r: control_pb2.SubmitRequest) -> TaskRow | Refused:
        """One task of a SubmitMany: its row, or why it is refused."""
        if (err := check_submit(r)) is not None:
            return Refused("INVALID_ARGUMENT", err)
        if r.inputs or r.outputs:
            return Refused("INVALID_ARGUMENT", "inputs and outputs need Submit or Run, "
                           "not SubmitMany")
        row = row_of(r)
        no = check_workspace(self.hub.state.workspace_nodes, row.tenant, r)
        return row if no is None else Refused(*no)

    async def _prepare(self, request: control_pb2.SubmitRequest, item: TaskRow | Refused,
                       caller: str) -> AgentTaskRow | Refused | None:
        """The monitor part of one task of a SubmitMany (None: a plain task)."""
        if self.agents is None or isinstance(item, Refused):
            return None
        try:
            return await self.agents.prepare(request, item.tenant, item.task_id, caller)
        except RequestError as e:
            return Refused(e.code, str(e))

    async def _add_watcher(self, task_id: str, context: Ctx) -> Watcher:
        try:
            return self.hub.watch.register(task_id, self._client(context))
        except RequestError as e:
            await self._fail(context, e)
            raise

    async def Run(self, request: control_pb2.RunRequest,  # noqa: N802
                  context: Ctx) -> control_pb2.RunResponse:
        if (err := check_submit(request.task)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err)
        deadline = wait_deadline(context.time_remaining())
        row = row_of(request.task)
        await self._task_files(request.task, row, context)
        tasks, watchers = self.hub.tasks, self.hub.state.watchers
        # Registered before the submit: the task's end cannot be published unseen.
        watcher = await self._add_watcher(row.task_id, context)
        task: TaskRow | None = None
        try:
            try:
                agent = (await self.agents.prepare(request.task, row.tenant, row.task_id,
                                                   self._client(context))
                         if self.agents else None)
                task, dedup = await tasks.submit(row)
                if agent is not None and self.agents is not None:
                    await self.agents.register(task, agent)
            except RequestError as e:
                await self._fail(context, e)
                raise
            if dedup:
                if task.command != request.task.command:
                    await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                        f"idempotency key {request.task.idempotency_key!r} "
                                        f"names task {task.task_id} with a different command")
                watchers.remove(watcher)
                watcher = await self._add_watcher(task.task_id, context)
                task = await tasks.get(task.task_id)
            await context.send_initial_metadata((("cortex-task-id", task.task_id),))
            task = await wait_end(tasks, watcher, task, deadline)
            if not task.state.terminal:
                then = "it goes on"
                if request.cancel_on_drop:
                    cancel_dropped(tasks, task.task_id)
                    then = "its cancel is requested (cancel_on_drop)"
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"task {task.task_id} is still {task.state.value} at the "
                                    f"deadline; {then} (cortexctl watch {task.task_id})")
            view = await self.hub.state.journals.view(task.task_id, task.attempt,
                                                      task.output_bytes)
        except asyncio.CancelledError:
            if request.cancel_on_drop and task is not None and not task.state.terminal:
                cancel_dropped(tasks, task.task_id)
            raise
        finally:
            watchers.remove(watcher)
        return control_pb2.RunResponse(task=task_pb(task), deduplicated=dedup,
                                       journal=_journal_pb(task, view))

    async def GetTask(self, request: control_pb2.GetTaskRequest,  # noqa: N802
                      context: Ctx) -> control_pb2.Task:
        try:
            pb = await self._with_outputs(self._task_pb(
                await self.hub.tasks.get(request.task_id)))
            return await self.agents.decorate(pb) if self.agents else pb
        except RequestError as e:
            await self._fail(context, e)
            raise

    async def Cancel(self, request: control_pb2.CancelRequest,  # noqa: N802
                     context: Ctx) -> control_pb2.CancelResponse:
        try:
            task, outcome = await self.hub.tasks.cancel_explained(request.task_id,
                                                                  request.reason)
            return control_pb2.CancelResponse(task=task_pb(task), outcome=outcome)
        except RequestError as e:
            await self._fail(context, e)
            raise

    async def SendInput(self, request: control_pb2.SendInputRequest,  # noqa: N802
                        context: Ctx) -> control_pb2.SendInputResponse:
        if not request.data or len(request.data) > MAX_INPUT_BYTES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"input must be 1 to {MAX_INPUT_BYTES} bytes")
        try:
            if self.agents is not None:  # a secret is known before the task can echo it
                await self.agents.input_sent(request.task_id, request.data)
            attempt = await self.hub.tasks.send_input(request.task_id, request.data)
        except RequestError as e:
            await self._fail(context, e)
            raise
        return control_pb2.SendInputResponse(attempt=attempt)

    async def ListNodes(self, request: control_pb2.ListNodesRequest,  # noqa: N802
                        context: Ctx) -> control_pb2.ListNodesResponse:
        try:
            after = listing.read_node_token(request.page_token)
        except listing.BadPageToken as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return listing.node_page([node_pb(n) for n in await self.hub.nodes.list()], after,
                                 request.limit)

    async def ListTasks(self, request: control_pb2.ListTasksRequest,  # noqa: N802
                        context: Ctx) -> control_pb2.ListTasksResponse:
        state = (State(control_pb2.TaskState.Name(request.state))
                 if request.state != control_pb2.TASK_STATE_UNSPECIFIED else None)
        limit = min(request.limit or 100, 10_000)
        try:
            before = listing.read_page_token(request.page_token)
        except listing.BadPageToken as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if request.attention and self.agents is not None:
            rows = await self.agents.attention_tasks(limit)
        else:  # one row past the limit says whether another page follows
            rows = await self.hub.tasks.list(state, request.node_id, limit + 1, before)
        attention = self.agents.attention if self.agents is not None else {}
        return listing.page([self._task_pb(t, attention.get(t.task_id, "")) for t in rows],
                            limit)

    async def ListShards(self, request: control_pb2.ListShardsRequest,  # noqa: N802
                         context: Ctx) -> control_pb2.ListShardsResponse:
        return control_pb2.ListShardsResponse(
            shards=[shard_pb(v) for v in await self.hub.shards.list()])

    async def ReadLogs(self, request: control_pb2.ReadLogsRequest,  # noqa: N802
                       context: Ctx) -> AsyncIterator[control_pb2.LogData]:
        try:
            async for offset, data in self.hub.tasks.read_logs(
                    request.task_id, request.attempt, request.offset, request.length):
                yield control_pb2.LogData(offset=offset, data=data)
        except RequestError as e:
            await self._fail(context, e)
            raise

    async def GetJournal(self, request: control_pb2.GetJournalRequest,  # noqa: N802
                         context: Ctx) -> control_pb2.Journal:
        try:
            task, view = await self.hub.tasks.journal(request.task_id)
        except RequestError as e:
            await self._fail(context, e)
            raise
        return _journal_pb(task, view)

    async def Watch(self, request: control_pb2.WatchRequest,  # noqa: N802
                    context: Ctx) -> AsyncIterator[control_pb2.WatchEvent]:
        try:
            async for seen in self.hub.watch.watch(request.task_id, request.from_offset,
                                                   request.no_output, self._client(context)):
                event = watch_pb(seen)
                if isinstance(seen, StateSeen) and seen.task.state is State.QUEUED:
                    wait = self.waits.explain_task(seen.task)
                    event.state.queue_wait, event.state.queue_reason = wait.code, wait.text
                yield event
        except RequestError as e:
            await self._fail(context, e)
            raise
