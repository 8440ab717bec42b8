"""The Monitors gRPC service (monitor.proto): validation at the edge, then Agents.

Operators: policies, decisions, trees, sessions, nudges. The monitor process (an
admin credential): the event feed and the calls that record what it decided.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cortex.ids import is_task_id
from cortex.v1 import control_pb2, monitor_pb2, monitor_pb2_grpc, node_pb2
from cortexd.control.agents import DEFAULT_OWNER, Agents
from cortexd.control.errors import RequestError
from cortexd.control.monitorfeed import share_of
from cortexd.control.state import HubState, now_ms
from cortexd.control.taskpb import prompt_pb, task_pb
from cortexd.monitors.actions import POLICY_NAME_CHARS, ActionError, action_from_dict
from cortexd.monitors.policy import PolicyError, parse_policy
from cortexd.store import TaskRow
from cortexd.store.monitoring import AgentTaskRow, DecisionRow, PolicyRow, SessionRow

Ctx = grpc.aio.ServicerContext[Any, Any]
SNAPSHOT_BATCH = 256
SCREEN_BYTES = 16_384  # the end of a journal a prompt's feed event carries
PROMPT_OUTPUT_WAIT_S = 2.0  # GetContext waits this long at most for a prompt's output


def screen_of(head: bytes, tail: bytes, omitted: int, n: int) -> bytes:
    """The last ``n`` bytes of a (redacted) journal: what a monitor's rules read."""
    return (tail if omitted or len(tail) >= n else head + tail)[-n:]
MAX_KEY_CHARS = 200


def decision_pb(d: DecisionRow) -> monitor_pb2.Decision:
    return monitor_pb2.Decision(
        decision_id=d.decision_id, task_id=d.task_id, attempt=d.attempt, wake=d.wake,
        trigger_key=d.trigger_key, rule_id=d.rule_id, model=d.model, action=d.action,
        args_json=json.dumps(d.args), latency_ms=d.latency_ms, prompt_tokens=d.prompt_tokens,
        completion_tokens=d.completion_tokens, context_digest=d.context_digest,
        context_bytes=d.context_bytes, note=d.note, session_id=d.session_id,
        applied=d.applied, result=d.result, at_ms=d.at_ms)


def monitored_pb(row: AgentTaskRow, task: control_pb2.Task) -> monitor_pb2.MonitoredTask:
    return monitor_pb2.MonitoredTask(task=task, policy_name=row.policy_name,
                                     policy_body=row.policy_body, goal=row.goal,
                                     session_id=row.session_id, attention=row.attention)


def _policy_name_ok(name: str) -> bool:
    return 0 < len(name) <= 64 and set(name) <= POLICY_NAME_CHARS and name != "inline"



async def output_reaching(state: HubState, task_id: str, attempt: int, offset: int,
                          total: int, timeout_s: float = PROMPT_OUTPUT_WAIT_S) -> int:
    """The durable output end of ``attempt`` once it reaches ``offset`` (a prompt's), or
    what it is after ``timeout_s``: woken by the task's own output events."""
    def durable() -> int:
        known = state.ends.get(task_id)
        return max(total, known[1]) if known is not None and known[0] == attempt else total

    moved = asyncio.Event()

    def on_event(tid: str, event: tuple[str, Any]) -> None:
        if tid == task_id:
            moved.set()

    state.on_publish.append(on_event)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while durable() < offset and (left := deadline - loop.time()) > 0:
            moved.clear()
            try:
                await asyncio.wait_for(moved.wait(), left)
            except TimeoutError:
                break
        return durable()
    finally:
        state.on_publish.remove(on_event)

class MonitorsService(monitor_pb2_grpc.MonitorsServicer):
    def __init__(self, agents: Agents) -> None:
        self.agents = agents
        self.state = agents.state
        self.tasks = agents.tasks
        self.store = agents.store

    async def _fail(self, context: Ctx, e: RequestError) -> None:
        await context.abort(getattr(grpc.StatusCode, e.code), str(e))

    async def _task_id(self, task_id: str, context: Ctx) -> str:
        if not is_task_id(task_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{task_id!r} is not a task id")
        return task_id

    def _pb(self, t: TaskRow) -> control_pb2.Task:
        return task_pb(t, self.state.task_progress(t.task_id, t.attempt),
                       self.state.last_prompt(t.task_id, t.attempt),
                       attention=self.agents.attention.get(t.task_id, ""))

    # -- policies -------------------------------------------------------------------

    async def PutPolicy(self, request: monitor_pb2.PutPolicyRequest,  # noqa: N802
                        context: Ctx) -> monitor_pb2.PolicyInfo:
        if not _policy_name_ok(request.name):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "policy names are 1-64 letters, digits, - _ . (not 'inline')")
        try:
            policy = parse_policy(request.name, request.body)
        except PolicyError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise
        t = now_ms()
        await self.store.put_policy(PolicyRow(DEFAULT_OWNER, request.name, request.body, t))
        return monitor_pb2.PolicyInfo(name=request.name, body=request.body, updated_ms=t,
                                      rules=len(policy.rules))

    async def GetPolicy(self, request: monitor_pb2.GetPolicyRequest,  # noqa: N802
                        context: Ctx) -> monitor_pb2.PolicyInfo:
        row = await self.store.get_policy(DEFAULT_OWNER, request.name)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no policy named {request.name!r}")
            raise AssertionError("unreachable")
        return monitor_pb2.PolicyInfo(name=row.name, body=row.body, updated_ms=row.updated_ms,
                                      rules=len(parse_policy(row.name, row.body).rules))

    async def ListPolicies(self, request: monitor_pb2.ListPoliciesRequest,  # noqa: N802
                           context: Ctx) -> monitor_pb2.ListPoliciesResponse:
        rows = await self.store.list_policies(DEFAULT_OWNER)
        return monitor_pb2.ListPoliciesResponse(policies=[
            monitor_pb2.PolicyInfo(name=r.name, updated_ms=r.updated_ms,
                                   rules=len(parse_policy(r.name, r.body).rules))
            for r in rows])

    # -- decisions, trees, sessions -----------------------------------------------------

    async def ListDecisions(self, request: monitor_pb2.ListDecisionsRequest,  # noqa: N802
                            context: Ctx) -> monitor_pb2.ListDecisionsResponse:
        if request.task_id:
            await self._task_id(request.task_id, context)
        elif not request.session_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task_id or session_id")
        rows = await self.store.decisions(task_id=request.task_id,
                                          session_id=request.session_id)
        return monitor_pb2.ListDecisionsResponse(decisions=[decision_pb(d) for d in rows])

    async def GetTree(self, request: monitor_pb2.GetTreeRequest,  # noqa: N802
                      context: Ctx) -> monitor_pb2.TaskTree:
        await self._task_id(request.task_id, context)
        try:
            chain = await self.agents.tree(request.task_id)
        except RequestError as e:
            await self._fail(context, e)
            raise
        return monitor_pb2.TaskTree(nodes=[monitor_pb2.TreeNode(
            task=self._pb(t), depth=depth, cause=cause) for t, depth, cause in chain])

    async def _session_info(self, s: SessionRow) -> tuple[monitor_pb2.SessionInfo,
                                                          list[TaskRow]]:
        state, tasks, decisions = await self.agents.session_state(s.session_id)
        return monitor_pb2.SessionInfo(
            session_id=s.session_id, goal=s.goal, root_task_id=s.root_task_id,
            created_ms=s.created_ms, state=state, tasks=len(tasks), decisions=decisions), tasks

    async def ListSessions(self, request: monitor_pb2.ListSessionsRequest,  # noqa: N802
                           context: Ctx) -> monitor_pb2.ListSessionsResponse:
        rows = await self.store.list_sessions(DEFAULT_OWNER, min(request.limit or 100, 1000))
        return monitor_pb2.ListSessionsResponse(
            sessions=[(await self._session_info(s))[0] for s in rows])

    async def GetSession(self, request: monitor_pb2.GetSessionRequest,  # noqa: N802
                         context: Ctx) -> monitor_pb2.SessionDetail:
        s = await self.store.get_session(request.session_id)
        if s is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no session {request.session_id!r}")
            raise AssertionError("unreachable")
        info, tasks = await self._session_info(s)
        decisions = await self.store.decisions(session_id=s.session_id)
        return monitor_pb2.SessionDetail(session=info, tasks=[self._pb(t) for t in tasks],
                                         decisions=[decision_pb(d) for d in decisions])

    async def Nudge(self, request: monitor_pb2.NudgeRequest,  # noqa: N802
                    context: Ctx) -> monitor_pb2.NudgeResponse:
        await self._task_id(request.task_id, context)
        if request.task_id not in self.agents.feed.watched:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"task {request.task_id} has no monitor watching it")
        delivered = self.agents.feed.send("nudge", request.task_id, request.task_id)
        return monitor_pb2.NudgeResponse(delivered=delivered)

    # -- the monitor process ------------------------------------------------------------

    async def Feed(self, request: monitor_pb2.FeedRequest,  # noqa: N802
                   context: Ctx) -> AsyncIterator[monitor_pb2.FeedEvent]:
        count = max(1, request.count)
        sub = self.agents.feed.subscribe(request.index % count, count)
        if sub is None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many feeds")
            raise AssertionError("unreachable")
        try:
            # Subscribed before the snapshot is read: nothing published after is missed
            # (an event seen twice is harmless: decisions are keyed by their event).
            rows = [r for r in await self.store.agent_tasks(watching=True)
                    if share_of(r.task_id, count) == sub.index]
            for i in range(0, len(rows), SNAPSHOT_BATCH):
                batch = rows[i:i + SNAPSHOT_BATCH]
                tasks = await asyncio.gather(*(self.store_task(r.task_id) for r in batch))
                for row, task in zip(batch, tasks, strict=True):
                    if task is not None:
                        yield monitor_pb2.FeedEvent(monitored=monitored_pb(row, self._pb(task)))
            yield monitor_pb2.FeedEvent(synced=True)
            while True:
                kind, task_id, payload = await sub.queue.get()
                if sub.overflowed:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        "the monitor fell behind the feed; reconnect")
                if (event := self._feed_event(kind, task_id, payload)) is not None:
                    yield event
        finally:
            self.agents.feed.unsubscribe(sub)

    async def store_task(self, task_id: str) -> TaskRow | None:
        return await self.state.store.get_task(task_id)

    def _feed_event(self, kind: str, task_id: str, payload: Any) -> monitor_pb2.FeedEvent | None:
        if kind == "state":
            return monitor_pb2.FeedEvent(state=self._pb(payload))
        if kind == "prompt":
            ev: node_pb2.PromptEvent = payload
            fp = monitor_pb2.FeedPrompt(task_id=task_id, attempt=ev.attempt,
                                        prompt=prompt_pb(ev))
            known = self.state.ends.get(task_id)
            view = (self.state.journals.cached_view(task_id, ev.attempt, known[1])
                    if known is not None and known[0] == ev.attempt else None)
            blobs = (self.agents.secrets.redact_known(task_id, view.head, view.tail)
                     if view is not None else None)
            if view is not None and blobs is not None:
                fp.has_screen, fp.screen_end = True, view.total_bytes
                fp.screen = screen_of(blobs[0], blobs[1], view.omitted_bytes, SCREEN_BYTES)
            return monitor_pb2.FeedEvent(prompt=fp)
        if kind == "output":
            attempt, end, at_ms = payload
            return monitor_pb2.FeedEvent(output=monitor_pb2.FeedOutput(
                task_id=task_id, attempt=attempt, end=end, at_ms=at_ms))
        if kind == "nudge":
            return monitor_pb2.FeedEvent(nudge=task_id)
        if kind == "attention":
            return monitor_pb2.FeedEvent(attention=monitor_pb2.FeedAttention(
                task_id=task_id, reason=payload))
        if kind == "monitored":
            row, task = payload
            return monitor_pb2.FeedEvent(monitored=monitored_pb(row, self._pb(task)))
        return None

    async def _record(self, request: monitor_pb2.Decision,
                      context: Ctx) -> tuple[DecisionRow, bool]:
        await self._task_id(request.task_id, context)
        if not request.trigger_key or len(request.trigger_key) > MAX_KEY_CHARS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "trigger_key is required")
        agent = await self.agents.agent_task(request.task_id)
        if agent is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "not a monitored task")
            raise AssertionError("unreachable")
        try:
            args = json.loads(request.args_json or "{}")
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "args_json is not JSON")
            raise
        return await self.store.record_decision(DecisionRow(
            owner=agent.owner, task_id=request.task_id, attempt=request.attempt,
            wake=request.wake, trigger_key=request.trigger_key, action=request.action,
            args=args, rule_id=request.rule_id, model=request.model,
            latency_ms=request.latency_ms, prompt_tokens=request.prompt_tokens,
            completion_tokens=request.completion_tokens,
            context_digest=request.context_digest, context_bytes=request.context_bytes,
            note=request.note[:1000], session_id=agent.session_id, at_ms=now_ms()))

    async def RecordDecision(self, request: monitor_pb2.Decision,  # noqa: N802
                             context: Ctx) -> monitor_pb2.RecordDecisionResponse:
        row, created = await self._record(request, context)
        return monitor_pb2.RecordDecisionResponse(decision=decision_pb(row), created=created)

    async def Act(self, request: monitor_pb2.ActRequest,  # noqa: N802
                  context: Ctx) -> monitor_pb2.ActResponse:
        """Record, then apply: the stored decision (an earlier one for the same event
        if there is one), unless it was applied or is an EXECUTE."""
        row, created = await self._record(request.decision, context)
        applied_now = False
        if request.apply and not row.applied and row.action != "EXECUTE":
            try:
                action = action_from_dict({"action": row.action, **row.args})
            except ActionError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                raise
            row.result = await self.agents.apply(row.task_id, action)
            await self.store.decision_applied(row.decision_id, row.result)
            row.applied = applied_now = True
        return monitor_pb2.ActResponse(decision=decision_pb(row), created=created,
                                       applied_now=applied_now)

    async def DecisionApplied(self, request: monitor_pb2.DecisionAppliedRequest,  # noqa: N802
                              context: Ctx) -> monitor_pb2.DecisionAppliedResponse:
        await self.store.decision_applied(request.decision_id, request.result)
        return monitor_pb2.DecisionAppliedResponse()

    async def SetMonitorState(self, request: monitor_pb2.SetMonitorStateRequest,  # noqa: N802
                              context: Ctx) -> monitor_pb2.SetMonitorStateResponse:
        await self._task_id(request.task_id, context)
        try:
            await self.agents.set_state(
                request.task_id, done=request.done, verdict=request.verdict[:1000],
                attention=request.attention[:1000] if request.set_attention else None)
        except RequestError as e:
            await self._fail(context, e)
            raise
        return monitor_pb2.SetMonitorStateResponse()

    async def GetContext(self, request: monitor_pb2.GetContextRequest,  # noqa: N802
                         context: Ctx) -> monitor_pb2.TaskContext:
        await self._task_id(request.task_id, context)
        try:
            task = await self.tasks.get(request.task_id)
        except RequestError as e:
            await self._fail(context, e)
            raise
        prompt = self.state.last_prompt(task.task_id, task.attempt)
        total = task.output_bytes
        if prompt is not None and not task.state.terminal and prompt.offset > total:
            # The prompt event can overtake its own output (they travel apart): a context
            # without the text that asks would have the monitor decide on older output.
            total = await output_reaching(self.state, task.task_id, task.attempt,
                                          prompt.offset, total)
        view = await self.state.journals.view(task.task_id, task.attempt, total)
        head, tail = await self.agents.context(task.task_id, view.head, view.tail)
        if request.screen_bytes:  # what rules read: the end of the output only
            head, tail = b"", screen_of(head, tail, view.omitted_bytes, request.screen_bytes)
        out = monitor_pb2.TaskContext(
            journal=control_pb2.Journal(
                task_id=task.task_id, attempt=task.attempt, head=head, tail=tail,
                total_bytes=view.total_bytes, omitted_bytes=view.omitted_bytes,
                omitted_from=view.omitted_from, omitted_to=view.omitted_to),
            last_prompt=prompt_pb(prompt) if prompt is not None else None)
        if request.browse_snapshot:
            snap = await self._snapshot(task.task_id)
            if snap is not None:
                out.snapshot.CopyFrom(snap)
        return out

    async def _snapshot(self, task_id: str) -> monitor_pb2.BrowseSnapshot | None:
        """The snapshot of the browser session the task's policy names (pagereads.py)."""
        row = await self.agents.agent_task(task_id)
        if row is None or not row.policy_body or self.agents.pages is None:
            return None
        try:
            handle = parse_policy(row.policy_name, row.policy_body).browse_session
        except PolicyError:
            return None
        return await self.agents.pages.snapshot(task_id, handle) if handle else None
