"""The monitors' tables on both backends (migration 0005): policies, agent tasks,
decisions recorded once per (task, attempt, trigger key), sessions."""

import asyncio
from collections.abc import Awaitable, Callable

from cortexd.store import open_store
from cortexd.store.monitoring import (
    DONE,
    AgentTaskRow,
    DecisionRow,
    MonitorTables,
    PolicyRow,
    SessionRow,
)

Body = Callable[[MonitorTables], Awaitable[None]]


def run(url: str, body: Body) -> None:
    async def main() -> None:
        store = open_store(url)
        await store.open()
        try:
            assert isinstance(store, MonitorTables)
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def test_policies_by_owner_and_name(url: str) -> None:
    async def body(s: MonitorTables) -> None:
        await s.put_policy(PolicyRow("default", "p1", "a = 1", 1))
        await s.put_policy(PolicyRow("default", "p1", "a = 2", 2))
        await s.put_policy(PolicyRow("other", "p1", "a = 3", 3))
        got = await s.get_policy("default", "p1")
        assert got is not None and (got.body, got.updated_ms) == ("a = 2", 2)
        assert [p.owner for p in await s.list_policies("other")] == ["other"]
        assert await s.get_policy("default", "nope") is None

    run(url, body)


def test_agent_tasks_links_and_attention(url: str) -> None:
    async def body(s: MonitorTables) -> None:
        root = AgentTaskRow("t-1", "default", policy_name="p", policy_body="x", goal="g",
                            session_id="s-1", created_ms=1, updated_ms=1)
        assert (await s.add_agent_task(root)).goal == "g"
        # A second insert keeps the first row (a retried submission).
        again = await s.add_agent_task(AgentTaskRow("t-1", "default", goal="other"))
        assert again.goal == "g"
        await s.add_agent_task(AgentTaskRow("t-2", "default", session_id="s-1",
                                            parent_task_id="t-1", cause="end:1",
                                            created_ms=2))
        assert [r.task_id for r in await s.agent_tasks(parent="t-1")] == ["t-2"]
        assert [r.task_id for r in await s.agent_tasks(watching=True)] == ["t-1"]
        await s.update_agent_task("t-1", 5, attention="password prompt")
        assert [r.task_id for r in await s.agent_tasks(attention=True)] == ["t-1"]
        row = await s.update_agent_task("t-1", 6, attention="", monitor_state=DONE,
                                        verdict="ok")
        assert row is not None and (row.attention, row.monitor_state, row.verdict) == (
            "", DONE, "ok")
        assert await s.agent_tasks(watching=True) == []
        assert {r.task_id for r in await s.agent_tasks(session_id="s-1")} == {"t-1", "t-2"}

    run(url, body)


def test_a_decision_is_recorded_once_per_trigger_key(url: str) -> None:
    async def body(s: MonitorTables) -> None:
        d = DecisionRow("default", "t-1", 1, "end", "end:1", "EXECUTE",
                        {"command": "echo b", "node": "b"}, rule_id="next", latency_ms=0.5,
                        session_id="s-1", at_ms=10)
        first, created = await s.record_decision(d)
        assert created and first.decision_id > 0 and not first.applied
        d2 = DecisionRow("default", "t-1", 1, "end", "end:1", "COMPLETE", {}, at_ms=11)
        second, created = await s.record_decision(d2)
        assert not created and second.action == "EXECUTE" and second.args["node"] == "b"
        await s.decision_applied(first.decision_id, "started t-2")
        third, _ = await s.record_decision(d2)
        assert third.applied and third.result == "started t-2"
        # Another attempt's end is another event.
        _, created = await s.record_decision(DecisionRow("default", "t-1", 2, "end", "end:2",
                                                         "COMPLETE", {}))
        assert created
        assert [x.attempt for x in await s.decisions(task_id="t-1")] == [1, 2]
        assert [x.trigger_key for x in await s.decisions(session_id="s-1")] == ["end:1"]

    run(url, body)


def test_sessions(url: str) -> None:
    async def body(s: MonitorTables) -> None:
        await s.add_session(SessionRow("s-1", "default", "ship it", "t-1", 1))
        await s.add_session(SessionRow("s-1", "default", "again", "t-9", 2))
        await s.add_session(SessionRow("s-2", "default", "second", "t-3", 3))
        got = await s.get_session("s-1")
        assert got is not None and got.goal == "ship it"
        assert [x.session_id for x in await s.list_sessions("default")] == ["s-2", "s-1"]

    run(url, body)


def test_sealed_secrets_round_trip(url: str) -> None:
    async def body(s: MonitorTables) -> None:
        blobs = [bytes([0, 255, 7]) * 10, b"\x00sealed\xff"]
        for i, b in enumerate(blobs):
            await s.add_secret("default", "t-1", b, i)
        await s.add_secret("default", "t-2", b"other", 9)
        assert await s.task_secrets("t-1") == blobs  # bytes exactly, oldest first
        assert await s.task_secrets("t-1", limit=1) == blobs[-1:]
        assert await s.task_secrets("t-3") == []

    run(url, body)
