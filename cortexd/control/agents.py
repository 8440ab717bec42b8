"""The control process's side of monitors: submissions, attention, secrets, links.

- A submission that names a monitor policy (stored, or inline TOML) or a goal, or
  that is a monitor's follow-up (a parent task), gets an ``agent_tasks`` row. The
  policy is resolved and validated *before* the task is created (an unknown or
  invalid policy is refused at the edge) and its text is kept with the task, so a
  later ``policies put`` does not change a running monitor. A goal starts an agent
  session; a follow-up joins its parent's session.
- **Attention**: a monitor's ESCALATE sets it; any input typed into the task (a
  person's answer through ``cortexctl input``) clears it. Watchers and the feed
  hear both.
- **Secrets**: input typed while the task's last prompt is a password prompt is
  kept by ``secrets.py`` (sealed in the store, a bounded cache in memory) and
  replaced by ``[secret]`` in every context a monitor reads (``GetContext``), so it
  never leaves the hub, and it is never logged.
- **Browse sessions**: a policy (or the submission, ``browse_session``) may name a
  browser session whose snapshot the monitor reads; the submitter must own it
  (checked here, pagereads.py), and the name is kept in the task's policy text.
"""

from collections import OrderedDict

from cortex.ids import is_task_id
from cortex.v1 import control_pb2
from cortexd.control.errors import RequestError
from cortexd.control.monitorfeed import MonitorFeed
from cortexd.control.pagereads import PageReads
from cortexd.control.secrets import SecretKeeper, load_key
from cortexd.control.state import HubState, now_ms
from cortexd.control.tasks import TaskService
from cortexd.monitors.actions import Action
from cortexd.monitors.policy import PolicyError, parse_policy, with_browse_session
from cortexd.store import TaskRow
from cortexd.store.monitoring import (
    DONE,
    AgentTaskRow,
    MonitorTables,
    SessionRow,
)

#: The owner of policies until tenants exist (the seam: every row has an owner).
DEFAULT_OWNER = "default"
MAX_GOAL_CHARS = 4000
MAX_TREE = 1000
MAX_CACHED_AGENTS = 10_000


def new_session_id() -> str:
    import secrets

    return "s-" + secrets.token_hex(8)


class Agents:
    def __init__(self, state: HubState, tasks: TaskService, store: MonitorTables,
                 feed: MonitorFeed) -> None:
        self.state = state
        self.tasks = tasks
        self.store = store
        self.feed = feed
        self.attention: dict[str, str] = {}
        self.secrets = SecretKeeper(store, load_key(state.settings.state_dir))
        # Agent rows of watched tasks as RecordDecision needs them (owner and session
        # never change after registration), so a decision costs one store statement.
        self._rows: OrderedDict[str, AgentTaskRow] = OrderedDict()
        self.pages: PageReads | None = None  # set by the control process (browse sessions)

    async def load(self) -> None:
        for row in await self.store.agent_tasks(watching=True):
            self.feed.watch(row.task_id)
        for row in await self.store.agent_tasks(attention=True):
            self.attention[row.task_id] = row.attention

    # -- submissions ---------------------------------------------------------------

    async def prepare(self, req: control_pb2.SubmitRequest, owner: str,
                      task_id: str = "", caller: str = "") -> AgentTaskRow | None:
        """The agent row a submission asks for (None: a plain task), or RequestError.
        ``task_id``: the id the submission will create; the feed holds that task's
        events until :meth:`register` (they can come before it, see monitorfeed).
        ``caller``: the submitter's credential name, who must own a browse session the
        policy names (pagereads.py)."""
        if not (req.monitor_policy or req.policy_toml or req.goal or req.parent_task_id
                or req.browse_session):
            return None
        if len(req.goal) > MAX_GOAL_CHARS:
            raise RequestError("INVALID_ARGUMENT", f"goal is longer than {MAX_GOAL_CHARS}")
        name, body = await self._policy(req)
        if req.browse_session and not body:
            raise RequestError("INVALID_ARGUMENT", "a browse session is read by a monitor: "
                               "give a monitor policy too")
        if body:
            try:
                if req.browse_session:
                    body = with_browse_session(name, body, req.browse_session)
                browse = parse_policy(name, body).browse_session
            except PolicyError as e:
                raise RequestError("INVALID_ARGUMENT", str(e)) from e
            if browse:
                if self.pages is None:
                    raise RequestError("FAILED_PRECONDITION", "this hub has no Browse service")
                await self.pages.check(browse, caller)
        session = ""
        if req.parent_task_id:
            if not is_task_id(req.parent_task_id):
                raise RequestError("INVALID_ARGUMENT", "parent_task_id is not a task id")
            parent = await self.store.get_agent_task(req.parent_task_id)
            if parent is None:
                raise RequestError("NOT_FOUND", f"parent task {req.parent_task_id} is not "
                                   "an agent task")
            session = parent.session_id
        t = now_ms()
        if name and task_id:
            self.feed.expect(task_id)
        return AgentTaskRow(task_id=task_id, owner=owner, policy_name=name, policy_body=body,
                            goal=req.goal, session_id=session,
                            parent_task_id=req.parent_task_id, cause=req.cause[:200],
                            created_ms=t, updated_ms=t)

    async def _policy(self, req: control_pb2.SubmitRequest) -> tuple[str, str]:
        """(name, text) of the submission's policy: a stored one, inline, or none."""
        name, body = req.monitor_policy, req.policy_toml
        if body and name not in ("", "inline"):
            raise RequestError("INVALID_ARGUMENT",
                               "give a stored policy's name or an inline policy, not both")
        if name and name != "inline":
            stored = await self.store.get_policy(DEFAULT_OWNER, name)
            if stored is None:
                raise RequestError("NOT_FOUND", f"no monitor policy named {name!r} "
                                   "(cortexctl policies ls)")
            return name, stored.body
        if body:
            return "inline", body
        if name == "inline":
            raise RequestError("INVALID_ARGUMENT", "monitor policy 'inline' needs policy_toml")
        return name, body

    async def register(self, task: TaskRow, prepared: AgentTaskRow) -> AgentTaskRow:
        """Store the agent row of a created (or deduplicated) task; idempotent."""
        if prepared.task_id and prepared.task_id != task.task_id:
            self.feed.forget_expected(prepared.task_id)
        elif prepared.task_id:  # the task this submission created: no secrets yet
            self.secrets.new_task(task.task_id)
        prepared.task_id = task.task_id
        fresh_session = ""
        if prepared.goal and not prepared.session_id:
            prepared.session_id = fresh_session = new_session_id()
        row = await self.store.add_agent_task(prepared)
        if fresh_session and row.session_id == fresh_session:
            await self.store.add_session(SessionRow(fresh_session, row.owner, row.goal,
                                                    row.task_id, row.created_ms))
        if row.policy_name and row.monitor_state != DONE and task.task_id not in \
                self.feed.watched:
            self.feed.watch(task.task_id, (row, task))
        else:
            self.feed.forget_expected(task.task_id)
        return row

    def abandon(self, prepared: AgentTaskRow | None) -> None:
        """A prepared submission that created no task."""
        if prepared is not None and prepared.task_id:
            self.feed.forget_expected(prepared.task_id)

    async def agent_task(self, task_id: str) -> AgentTaskRow | None:
        """The agent row of ``task_id`` (its owner and session are as registered)."""
        row = self._rows.get(task_id)
        if row is None:
            row = await self.store.get_agent_task(task_id)
            if row is not None:
                self._rows[task_id] = row
                while len(self._rows) > MAX_CACHED_AGENTS:
                    self._rows.popitem(last=False)
        return row

    # -- attention, input, secrets ----------------------------------------------------

    async def set_state(self, task_id: str, *, done: bool = False, verdict: str = "",
                        attention: str | None = None) -> None:
        row = await self.store.update_agent_task(
            task_id, now_ms(), monitor_state=DONE if done else None,
            verdict=verdict if done else None, attention=attention)
        if row is None:
            raise RequestError("NOT_FOUND", f"task {task_id} is not monitored")
        if done:
            self.feed.unwatch(task_id)
        if attention is not None:
            self._attention(task_id, attention)

    def _attention(self, task_id: str, reason: str) -> None:
        if reason:
            self.attention[task_id] = reason
        else:
            self.attention.pop(task_id, None)
        self.state.publish(task_id, ("attention", reason))

    async def input_sent(self, task_id: str, data: bytes) -> None:
        """Input goes to the task (called just before it is sent, so that a program
        echoing it cannot be faster than its redaction): a secret if typed at a password
        prompt; a person's answer ends the task's need for one."""
        prompt = self.state.prompts.get(task_id)
        if prompt is not None and prompt.kind == "password":
            row = await self.agent_task(task_id)
            await self.secrets.add(row.owner if row is not None else DEFAULT_OWNER, task_id,
                                   data.strip(b"\r\n"), now_ms())
        if task_id in self.attention:
            await self.store.update_agent_task(task_id, now_ms(), attention="")
            self._attention(task_id, "")

    async def apply(self, task_id: str, a: Action) -> str:
        """Apply a monitor's decision in the hub (every action but EXECUTE, which the
        monitor submits); the result as recorded. Input or a cancel the task can no
        longer take is a result ("not applied: …"), not an error."""
        try:
            if a.name == "SEND_INPUT":
                data = a.text.encode()
                await self.input_sent(task_id, data)  # a secret is known before any echo
                await self.tasks.send_input(task_id, data)
                return f"sent {len(data)} bytes"
            if a.name == "KILL":
                await self.tasks.cancel_explained(task_id, a.reason or "killed by its monitor")
                return "cancel requested"
        except RequestError as e:
            return f"not applied: {e}"
        if a.name == "COMPLETE":
            await self.set_state(task_id, done=True, verdict=(a.verdict or "complete")[:1000])
            return "monitor done"
        if a.name == "ESCALATE":
            await self.set_state(task_id, attention=(a.reason or "needs a person")[:1000])
            return "waiting for a person"
        if a.name == "WAIT":
            return f"next check in {a.next_check_seconds} s"
        raise RequestError("INVALID_ARGUMENT", f"the hub does not apply {a.name}")

    # -- views ------------------------------------------------------------------------

    async def attention_tasks(self, limit: int) -> list[TaskRow]:
        rows = await self.store.agent_tasks(attention=True, limit=limit)
        return [await self.tasks.get(r.task_id) for r in rows]

    async def decorate(self, pb: control_pb2.Task) -> control_pb2.Task:
        row = await self.store.get_agent_task(pb.task_id)
        if row is None:
            return pb
        children = await self.store.agent_tasks(parent=pb.task_id, limit=MAX_TREE)
        pb.monitor_policy, pb.attention, pb.goal = row.policy_name, row.attention, row.goal
        pb.parent_task_id, pb.session_id = row.parent_task_id, row.session_id
        pb.monitor_state = row.monitor_state if row.policy_name else ""
        pb.children.extend(c.task_id for c in children)
        return pb

    async def tree(self, task_id: str) -> list[tuple[TaskRow, int, str]]:
        """The chain ``task_id`` belongs to, from its root, depth first."""
        root = await self.store.get_agent_task(task_id)
        if root is None:
            return [(await self.tasks.get(task_id), 0, "")]
        seen = {root.task_id}
        while root.parent_task_id and len(seen) < MAX_TREE:
            parent = await self.store.get_agent_task(root.parent_task_id)
            if parent is None or parent.task_id in seen:
                break
            seen.add(parent.task_id)
            root = parent
        out: list[tuple[TaskRow, int, str]] = []
        stack: list[tuple[AgentTaskRow, int]] = [(root, 0)]
        while stack and len(out) < MAX_TREE:
            row, depth = stack.pop()
            out.append((await self.tasks.get(row.task_id), depth, row.cause))
            kids = await self.store.agent_tasks(parent=row.task_id, limit=MAX_TREE)
            stack.extend((k, depth + 1) for k in reversed(kids))
        return out

    async def session_state(self, session_id: str) -> tuple[str, list[TaskRow], int]:
        rows = await self.store.agent_tasks(session_id=session_id, limit=MAX_TREE)
        tasks = [await self.tasks.get(r.task_id) for r in rows]
        decisions = len(await self.store.decisions(session_id=session_id))
        if any(r.attention for r in rows):
            state = "attention"
        elif any(not t.state.terminal for t in tasks) or any(
                r.policy_name and r.monitor_state != DONE for r in rows):
            state = "active"
        else:
            state = "done"
        return state, tasks, decisions

    async def context(self, task_id: str, head: bytes, tail: bytes) -> tuple[bytes, bytes]:
        """The journal as a monitor may see it: the task's secrets replaced."""
        head, tail = await self.secrets.redact(task_id, head, tail)
        return head, tail


async def start_agents(state: HubState, tasks: TaskService, store: object) -> Agents:
    """The control process's monitors part, fed by the hub's publish hook."""
    assert isinstance(store, MonitorTables), "every store backend has the monitors' tables"
    feed = MonitorFeed()
    agents = Agents(state, tasks, store, feed)
    await agents.load()
    state.on_publish.append(feed.on_publish)
    return agents
