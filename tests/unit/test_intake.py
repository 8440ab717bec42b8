"""SubmitMany's intake against a real SQLite store: outcomes in order, the queue bound
held across concurrent calls, duplicates of a key inside one call."""

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.ids import new_task_id
from cortexd import config
from cortexd.control.intake import Intake, Refused
from cortexd.control.state import HubState
from cortexd.serializers.envelope import InlineEncoder
from cortexd.store import TaskRow
from cortexd.store.sqlite import SQLiteStore


def row(command: str, key: str = "") -> TaskRow:
    return TaskRow(task_id=new_task_id(), command=command, idempotency_key=key,
                   created_ms=1, updated_ms=1)


async def hub_with(tmp_path: Path, max_queued: int) -> HubState:
    settings = config.load(None, {"insecure_loopback": True, "max_queued_tasks": max_queued},
                           environ={})
    store = SQLiteStore(str(tmp_path / "c.db"))
    await store.open()
    return HubState(settings, store, InlineEncoder(Ed25519PrivateKey.generate(), 60_000), "h")


def test_outcomes_in_order_with_refusals_and_duplicates(tmp_path: Path) -> None:
    async def go() -> None:
        hub = await hub_with(tmp_path, 100)
        bad = Refused("INVALID_ARGUMENT", "command is required")
        items: list[TaskRow | Refused] = [row("a", "k1"), bad, row("b", "k2"), row("a", "k1")]
        out = await Intake(hub).submit_many(items)
        assert out[1] is bad
        first, second, dup = out[0], out[2], out[3]
        assert isinstance(first, tuple) and isinstance(second, tuple) and isinstance(dup, tuple)
        assert first[1] is False and second[1] is False
        assert dup == (first[0], True)  # the same key inside one call: one task
        assert set(hub.queue) == {first[0].task_id, second[0].task_id}
        assert await hub.store.get_task(first[0].task_id) is not None
        await hub.store.close()
    asyncio.run(go())


def test_queue_bound_holds_across_concurrent_calls(tmp_path: Path) -> None:
    async def go() -> None:
        hub = await hub_with(tmp_path, 10)
        intake = Intake(hub)
        calls = [intake.submit_many([row(f"c{c}-{i}") for i in range(4)]) for c in range(4)]
        results = [o for out in await asyncio.gather(*calls) for o in out]
        taken = [o for o in results if isinstance(o, tuple)]
        refused = [o for o in results if isinstance(o, Refused)]
        assert len(taken) == 10 and len(hub.queue) == 10
        assert len(refused) == 6
        assert all(r.code == "RESOURCE_EXHAUSTED" and "10 tasks" in r.message for r in refused)
        assert intake.reserved == 0
        await hub.store.close()
    asyncio.run(go())
