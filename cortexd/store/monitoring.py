"""The monitors' tables (migration 0005): policies, agent tasks, decisions, sessions.

One definition of the SQL for both backends: :class:`MonitorTables` is written
against one primitive each store provides (``_m_all``, a statement and its rows;
``?`` placeholders, turned into ``%s`` for PostgreSQL), so SQLite and PostgreSQL
cannot drift apart. Every row has an ``owner`` (the tenant).

- ``agent_tasks``: a task the agent layer knows — monitored (its policy, as text,
  resolved at submission), or a follow-up (its parent and the decision that
  caused it), or both; ``monitor_state`` is ``watching`` or ``done``.
- ``decisions``: one row per (task, attempt, trigger key), ever: the unique key is
  what makes a decision — and the EXECUTE it may start — happen once however
  often its monitor is woken for the same event. ``applied`` is set after the
  action was carried out; a monitor that finds a recorded decision not applied
  (it died in between) applies it again, idempotently.
"""

import json
from dataclasses import dataclass, field
from typing import Any

WATCHING = "watching"
DONE = "done"

_AGENT_COLS = ("task_id, owner, policy_name, policy_body, goal, session_id, parent_task_id, "
               "cause, monitor_state, attention, verdict, created_ms, updated_ms")
_DECISION_COLS = ("id, owner, task_id, attempt, wake, trigger_key, rule_id, model, action, "
                  "args, latency_ms, prompt_tokens, completion_tokens, context_digest, "
                  "context_bytes, note, session_id, applied, result, at_ms")


@dataclass(slots=True)
class PolicyRow:
    owner: str
    name: str
    body: str
    updated_ms: int


@dataclass(slots=True)
class AgentTaskRow:
    task_id: str
    owner: str
    policy_name: str = ""  # "" = not monitored; "inline" = given with the submission
    policy_body: str = ""
    goal: str = ""
    session_id: str = ""
    parent_task_id: str = ""
    cause: str = ""  # the parent's decision key that started this task
    monitor_state: str = WATCHING
    attention: str = ""  # why a person is needed ("" = not needed)
    verdict: str = ""
    created_ms: int = 0
    updated_ms: int = 0


@dataclass(slots=True)
class DecisionRow:
    owner: str
    task_id: str
    attempt: int
    wake: str  # prompt | end | timer | nudge
    trigger_key: str
    action: str
    args: dict[str, Any] = field(default_factory=dict)
    rule_id: str = ""
    model: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_digest: str = ""
    context_bytes: int = 0
    note: str = ""
    session_id: str = ""
    applied: bool = False
    result: str = ""
    at_ms: int = 0
    decision_id: int = 0


@dataclass(slots=True)
class SessionRow:
    session_id: str
    owner: str
    goal: str
    root_task_id: str
    created_ms: int


def _agent(r: tuple[Any, ...]) -> AgentTaskRow:
    return AgentTaskRow(*r)


def _decision(r: tuple[Any, ...]) -> DecisionRow:
    return DecisionRow(
        decision_id=int(r[0]), owner=r[1], task_id=r[2], attempt=int(r[3]), wake=r[4],
        trigger_key=r[5], rule_id=r[6], model=r[7], action=r[8], args=json.loads(r[9]),
        latency_ms=float(r[10]), prompt_tokens=int(r[11]), completion_tokens=int(r[12]),
        context_digest=r[13], context_bytes=int(r[14]), note=r[15], session_id=r[16],
        applied=bool(r[17]), result=r[18], at_ms=int(r[19]))


class MonitorTables:
    """The monitors' queries; a store class mixes this in and defines the primitives."""

    async def _m_all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def _m_one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = await self._m_all(sql, args)
        return rows[0] if rows else None

    # -- policies ---------------------------------------------------------------

    async def put_policy(self, row: PolicyRow) -> None:
        await self._m_all("INSERT INTO policies (owner, name, body, updated_ms) VALUES "
                          "(?,?,?,?) ON CONFLICT (owner, name) DO UPDATE SET "
                          "body=excluded.body, updated_ms=excluded.updated_ms RETURNING 1",
                          (row.owner, row.name, row.body, row.updated_ms))

    async def get_policy(self, owner: str, name: str) -> PolicyRow | None:
        r = await self._m_one("SELECT owner, name, body, updated_ms FROM policies "
                              "WHERE owner=? AND name=?", (owner, name))
        return None if r is None else PolicyRow(r[0], r[1], r[2], int(r[3]))

    async def list_policies(self, owner: str) -> list[PolicyRow]:
        rows = await self._m_all("SELECT owner, name, body, updated_ms FROM policies "
                                 "WHERE owner=? ORDER BY name", (owner,))
        return [PolicyRow(r[0], r[1], r[2], int(r[3])) for r in rows]

    # -- agent tasks --------------------------------------------------------------

    async def add_agent_task(self, row: AgentTaskRow) -> AgentTaskRow:
        """Insert ``row`` unless its task has one; return the stored row."""
        await self._m_all(
            f"INSERT INTO agent_tasks ({_AGENT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (task_id) DO NOTHING RETURNING 1",
            (row.task_id, row.owner, row.policy_name, row.policy_body, row.goal,
             row.session_id, row.parent_task_id, row.cause, row.monitor_state, row.attention,
             row.verdict, row.created_ms, row.updated_ms))
        stored = await self.get_agent_task(row.task_id)
        assert stored is not None
        return stored

    async def get_agent_task(self, task_id: str) -> AgentTaskRow | None:
        r = await self._m_one(f"SELECT {_AGENT_COLS} FROM agent_tasks WHERE task_id=?",
                              (task_id,))
        return None if r is None else _agent(r)

    async def agent_tasks(self, *, watching: bool = False, attention: bool = False,
                          session_id: str = "", parent: str = "",
                          limit: int = 10_000) -> list[AgentTaskRow]:
        where, args = [], []
        if watching:
            where.append("monitor_state=? AND policy_name<>''")
            args.append(WATCHING)
        if attention:
            where.append("attention<>''")
        if session_id:
            where.append("session_id=?")
            args.append(session_id)
        if parent:
            where.append("parent_task_id=?")
            args.append(parent)
        sql = f"SELECT {_AGENT_COLS} FROM agent_tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._m_all(sql + " ORDER BY created_ms, task_id LIMIT ?",
                                 (*args, limit))
        return [_agent(r) for r in rows]

    async def update_agent_task(self, task_id: str, now_ms: int, *,
                                monitor_state: str | None = None, attention: str | None = None,
                                verdict: str | None = None) -> AgentTaskRow | None:
        sets: list[str] = ["updated_ms=?"]
        args: list[Any] = [now_ms]
        for column, value in (("monitor_state", monitor_state), ("attention", attention),
                              ("verdict", verdict)):
            if value is not None:
                sets.append(f"{column}=?")
                args.append(value)
        await self._m_all(f"UPDATE agent_tasks SET {', '.join(sets)} WHERE task_id=? "
                          "RETURNING 1", (*args, task_id))
        return await self.get_agent_task(task_id)

    # -- decisions --------------------------------------------------------------------

    async def record_decision(self, d: DecisionRow) -> tuple[DecisionRow, bool]:
        """Record ``d`` unless its (task, attempt, trigger key) has a decision already;
        (the stored decision, whether it is this one)."""
        inserted = await self._m_one(
            f"INSERT INTO decisions ({_DECISION_COLS.removeprefix('id, ')}) VALUES "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            f"ON CONFLICT (task_id, attempt, trigger_key) DO NOTHING RETURNING {_DECISION_COLS}",
            (d.owner, d.task_id, d.attempt, d.wake, d.trigger_key, d.rule_id, d.model,
             d.action, json.dumps(d.args), d.latency_ms, d.prompt_tokens,
             d.completion_tokens, d.context_digest, d.context_bytes, d.note, d.session_id,
             False, "", d.at_ms))
        if inserted is not None:  # one statement in the usual case
            return _decision(inserted), True
        r = await self._m_one(f"SELECT {_DECISION_COLS} FROM decisions WHERE task_id=? AND "
                              "attempt=? AND trigger_key=?",
                              (d.task_id, d.attempt, d.trigger_key))
        assert r is not None
        return _decision(r), False

    async def decision_applied(self, decision_id: int, result: str) -> None:
        await self._m_all("UPDATE decisions SET applied=?, result=? WHERE id=? RETURNING 1",
                          (True, result[:1000], decision_id))

    async def decisions(self, *, task_id: str = "", session_id: str = "",
                        limit: int = 1000) -> list[DecisionRow]:
        column, value = ("task_id", task_id) if task_id else ("session_id", session_id)
        rows = await self._m_all(f"SELECT {_DECISION_COLS} FROM decisions WHERE {column}=? "
                                 "ORDER BY id LIMIT ?", (value, limit))
        return [_decision(r) for r in rows]

    # -- sessions -----------------------------------------------------------------------

    async def add_session(self, s: SessionRow) -> None:
        await self._m_all("INSERT INTO agent_sessions (session_id, owner, goal, root_task_id, "
                          "created_ms) VALUES (?,?,?,?,?) ON CONFLICT (session_id) DO NOTHING "
                          "RETURNING 1",
                          (s.session_id, s.owner, s.goal, s.root_task_id, s.created_ms))

    async def get_session(self, session_id: str) -> SessionRow | None:
        r = await self._m_one("SELECT session_id, owner, goal, root_task_id, created_ms FROM "
                              "agent_sessions WHERE session_id=?", (session_id,))
        return None if r is None else SessionRow(r[0], r[1], r[2], r[3], int(r[4]))

    async def list_sessions(self, owner: str, limit: int = 100) -> list[SessionRow]:
        rows = await self._m_all("SELECT session_id, owner, goal, root_task_id, created_ms FROM "
                                 "agent_sessions WHERE owner=? ORDER BY created_ms DESC, "
                                 "session_id LIMIT ?", (owner, limit))
        return [SessionRow(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    # -- secrets (sealed by the control process, cortexd/control/secrets.py) -------------

    async def add_secret(self, owner: str, task_id: str, sealed: bytes, at_ms: int) -> None:
        await self._m_all("INSERT INTO task_secrets (owner, task_id, sealed, at_ms) VALUES "
                          "(?,?,?,?) RETURNING 1", (owner, task_id, sealed, at_ms))

    async def task_secrets(self, task_id: str, limit: int = 64) -> list[bytes]:
        """The sealed secrets of ``task_id``, the newest last."""
        rows = await self._m_all("SELECT sealed FROM task_secrets WHERE task_id=? "
                                 "ORDER BY id DESC LIMIT ?", (task_id, limit))
        return [bytes(r[0]) for r in reversed(rows)]
