"""Submissions taken in by a shard (cortexd/shards/intake.py) and placed by the control
process (cortexd/control/submits.py), on a real SQLite file both open.

The shard's ring is a loopback here: its RESERVE and CREATED go to a real ``Hub``'s
inbox, whose RESERVED comes back to the shard; what control sends to nodes is kept.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.v1 import node_pb2
from cortexd import config
from cortexd.control.hub import Hub
from cortexd.control.intake import Refused
from cortexd.control.state import NodeState
from cortexd.ipc import messages as m
from cortexd.lifecycle import State
from cortexd.serializers.envelope import InlineEncoder
from cortexd.shards import intake as intake_mod
from cortexd.shards.intake import ShardIntake
from cortexd.shards.session import NodeSession, SessionTable
from cortexd.store import TaskRow
from cortexd.store.base import pack_row
from cortexd.store.sqlite import SQLiteStore


class Loop:
    """Both ends of shard 0's rings: the shard's records to the hub's inbox, the hub's
    records to the shard (RESERVED) or kept (envelopes for nodes)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.intake: ShardIntake | None = None
        self.sent: list[node_pb2.HubFrame] = []
        self.to_control: list[list[Any]] = []
        self.drop_reserve = False  # control "restarting": RESERVE is never answered
        self.hold_created = False  # the shard "dies" before CREATED reaches control

    async def send(self, record: bytes) -> None:  # the shard's up ring
        msg = m.unpack(record)
        self.to_control.append(msg)
        if (msg[0] == m.RESERVE and self.drop_reserve) or (
                msg[0] == m.CREATED and self.hold_created):
            return
        if msg[0] == m.CREATED:  # the inbox takes CREATED in as it reads the ring
            self.hub.inbox._created(0, msg)
            return
        await self.hub.inbox._dispatch(0, msg)

    def send_nowait(self, record: bytes) -> bool:  # the hub's down ring
        msg = m.unpack(record)
        if msg[0] == m.RESERVED:
            assert self.intake is not None
            self.intake.reserved(msg)
        elif msg[0] == m.SEND:
            self.sent.append(node_pb2.HubFrame.FromString(msg[3]))
        return True


@dataclass
class Rig:
    hub: Hub
    store: SQLiteStore  # control's
    shard: SQLiteStore  # the shard's own connection
    intake: ShardIntake
    loop: Loop

    def node(self) -> NodeState:
        return self.hub.state.nodes["n1"]


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, nodes: int = 1, **settings: Any) -> AsyncIterator[Rig]:
    s = config.load(None, {"insecure_loopback": True, **settings}, environ={})
    store = SQLiteStore(str(tmp_path / "c.db"))
    await store.open()
    hub = Hub(s, store, InlineEncoder(Ed25519PrivateKey.generate(), 60_000), "h")
    for i in range(1, nodes + 1):
        hub.state.nodes[f"n{i}"] = NodeState(f"n{i}", await store.mint_epoch(), 0, {}, 4,
                                             attached=True)
    shard = SQLiteStore(str(tmp_path / "c.db"))
    await shard.open()
    loop = Loop(hub)
    hub.state.links[0] = loop  # type: ignore[assignment]
    intake = ShardIntake(s, loop, shard, relay=None)  # type: ignore[arg-type]
    loop.intake = intake
    try:
        yield Rig(hub, store, shard, intake, loop)
    finally:
        await shard.close()
        await store.close()


def row(n: int, key: str = "", command: str = "true") -> TaskRow:
    return TaskRow(task_id=f"t-{n:020d}", command=command, idempotency_key=key,
                   created_ms=1, updated_ms=1)


async def sent_soon(loop: Loop, count: int) -> list[node_pb2.HubFrame]:
    for _ in range(200):  # the envelopes go out on the loop turn after the insert
        if len(loop.sent) >= count:
            break
        await asyncio.sleep(0.005)
    return loop.sent


def test_a_plain_submission_is_inserted_placed_by_the_shard_and_sent_by_control(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            (outcome,) = await r.intake.take([row(1)])
            assert not isinstance(outcome, Refused)
            task, dedup = outcome
            assert (task.state, task.node_id, dedup) == (State.ASSIGNED, "n1", False)
            stored = await r.store.get_task(task.task_id)
            assert stored is not None and stored.state is State.ASSIGNED
            assert stored.node_epoch == r.node().epoch
            # Control took it in: the slot, the envelope, no hold left.
            assert r.node().running == {task.task_id}
            sent = await sent_soon(r.loop, 1)
            assert [node_pb2.TaskEnvelope.FromString(f.task.body).task_id for f in sent] == \
                [task.task_id]
            assert r.hub.submits.holds == {}
            assert [msg[0] for msg in r.loop.to_control] == [m.RESERVE, m.CREATED]
    asyncio.run(main())


def test_without_a_free_node_the_task_is_queued_for_the_scheduler(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, nodes=0) as r:
            (outcome,) = await r.intake.take([row(1)])
            assert not isinstance(outcome, Refused)
            assert outcome[0].state is State.QUEUED
            assert list(r.hub.state.queue) == [outcome[0].task_id]
            assert r.hub.submits.queued_held == 0 and r.hub.submits.holds == {}
    asyncio.run(main())


def test_an_idempotency_key_twice_is_one_task_and_its_second_hold_is_let_go(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            first, again = await r.intake.take([row(1, "k"), row(2, "k")])
            assert not isinstance(first, Refused) and not isinstance(again, Refused)
            assert again[0].task_id == first[0].task_id and again[1] is True
            assert r.node().running == {first[0].task_id}  # the second slot was let go
            assert r.hub.submits.holds == {}
    asyncio.run(main())


def test_a_full_queue_refuses_with_its_limit_and_stores_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, nodes=0, max_queued_tasks=2) as r:
            outcomes = await r.intake.take([row(1), row(2), row(3)])
            assert [isinstance(o, Refused) for o in outcomes] == [False, False, True]
            refused = outcomes[2]
            assert isinstance(refused, Refused) and refused.code == "RESOURCE_EXHAUSTED"
            assert "2 tasks" in refused.message
            assert await r.store.get_task(row(3).task_id) is None
    asyncio.run(main())


def test_a_shard_gone_after_its_insert_has_its_task_taken_in_from_the_store(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, nodes=1) as r:
            r.loop.hold_created = True  # committed, then the shard died: no CREATED
            (placed,) = await r.intake.take([row(1)])
            assert not isinstance(placed, Refused)
            assert set(r.hub.submits.holds) == {placed[0].task_id}
            # A reservation that never got to its insert (the shard died first).
            r.hub.submits.reserve(0, [[row(2).task_id, {}, "", "", 300]])
            assert len(r.node().running) == 2
            r.hub.submits.shard_down(0)
            for _ in range(200):
                if not r.hub.submits.holds and r.loop.sent:
                    break
                await asyncio.sleep(0.005)
            assert r.hub.submits.holds == {}
            assert r.node().running == {placed[0].task_id}  # the other slot let go
            assert len(r.loop.sent) == 1  # the stored one's envelope, once
            # The CREATED arriving after all changes nothing (taken in once).
            r.loop.hold_created = False
            late = await r.store.get_task(placed[0].task_id)
            assert late is not None
            await r.loop.send(m.pack(m.CREATED, 99, [[late.task_id, pack_row(late), True, "",
                                                       256, False]]))
            await asyncio.sleep(0.05)
            assert r.node().running == {placed[0].task_id} and len(r.loop.sent) == 1
    asyncio.run(main())


def test_control_silent_means_unavailable_nothing_stored_and_its_hold_let_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_mod, "RESERVE_WAIT_S", 0.05)

    async def main() -> None:
        async with rig(tmp_path) as r:
            r.loop.drop_reserve = True
            (outcome,) = await r.intake.take([row(1)])
            assert isinstance(outcome, Refused) and outcome.code == "UNAVAILABLE"
            assert await r.store.get_task(row(1).task_id) is None
            # The RESERVE reaches control late: the shard's "abandoned" lets its hold go.
            r.loop.drop_reserve = False
            await r.hub.inbox._dispatch(0, r.loop.to_control[0])
            assert set(r.hub.submits.holds) == {row(1).task_id}
            r.hub.inbox._created(0, r.loop.to_control[1])
            for _ in range(200):
                if not r.hub.submits.holds:
                    break
                await asyncio.sleep(0.005)
            assert r.hub.submits.holds == {} and r.node().running == set()
    asyncio.run(main())


def test_a_task_placed_on_the_shards_own_node_is_signed_and_sent_there_not_by_control(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(tmp_path, nodes=2) as r:
            # Node n1's stream is on this shard, n2's on another.
            sessions = SessionTable()
            mine = NodeSession("n1", 1, epoch=r.node().epoch)
            sessions.active["n1"] = mine
            r.intake.sessions = sessions
            r.intake.encoder = InlineEncoder(Ed25519PrivateKey.generate(), 60_000)
            outcomes = await r.intake.take([row(1), row(2)])
            placed = {o[0].node_id: o[0].task_id for o in outcomes
                      if not isinstance(o, Refused)}
            assert set(placed) == {"n1", "n2"}  # the least loaded node each
            here = node_pb2.HubFrame.FromString(mine.outbound.get_nowait())
            assert node_pb2.TaskEnvelope.FromString(here.task.body).task_id == placed["n1"]
            assert mine.outbound.empty()
            # Control sent only the other node's envelope; CREATED said which it need not.
            sent = await sent_soon(r.loop, 1)
            await asyncio.sleep(0.02)
            assert [node_pb2.TaskEnvelope.FromString(f.task.body).task_id for f in sent] == \
                [placed["n2"]]
            created = [e for msg in r.loop.to_control if msg[0] == m.CREATED for e in msg[2]]
            assert {e[0]: e[5] for e in created} == {placed["n1"]: True, placed["n2"]: False}
            assert r.hub.state.nodes["n1"].running == {placed["n1"]}  # control holds its slot
    asyncio.run(main())
