"""GetContext's wait for a prompt's own output (cortexd/control/monitorapi.py): a prompt
event can overtake the output it ends, so the context waits for the durable end to reach
the prompt's offset — woken by that task's output, bounded in time."""

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortexd import config
from cortexd.control.monitorapi import output_reaching
from cortexd.control.state import HubState
from cortexd.serializers.envelope import InlineEncoder
from cortexd.store.sqlite import SQLiteStore


async def hub(tmp_path: Path) -> HubState:
    settings = config.load(None, {"insecure_loopback": True}, environ={})
    store = SQLiteStore(str(tmp_path / "c.db"))
    await store.open()
    return HubState(settings, store, InlineEncoder(Ed25519PrivateKey.generate(), 60_000), "h")


def durable(st: HubState, task_id: str, attempt: int, before: int, data: bytes) -> None:
    """What attempts.py does once an append committed."""
    st.remember_end(task_id, attempt, before + len(data))
    st.publish(task_id, ("output", (attempt, before, data)))


def test_waits_for_the_prompts_output_and_not_for_others(tmp_path: Path) -> None:
    async def go() -> None:
        st = await hub(tmp_path)
        waiting = asyncio.create_task(output_reaching(st, "t1", 1, 20, 10, timeout_s=30))
        await asyncio.sleep(0)
        durable(st, "t2", 1, 0, b"x" * 50)  # another task's output: no effect
        durable(st, "t1", 2, 0, b"x" * 50)  # another attempt's: no effect
        durable(st, "t1", 1, 10, b"y" * 5)  # not there yet
        await asyncio.sleep(0.01)
        assert not waiting.done()
        durable(st, "t1", 1, 15, b"z" * 7)
        assert await asyncio.wait_for(waiting, 5) == 22
        assert st.on_publish == []  # the hook is gone with the wait
        await st.store.close()
    asyncio.run(go())


def test_gives_what_is_durable_when_the_output_never_comes(tmp_path: Path) -> None:
    async def go() -> None:
        st = await hub(tmp_path)
        durable(st, "t1", 1, 0, b"a" * 12)
        assert await output_reaching(st, "t1", 1, 40, 5, timeout_s=0.05) == 12
        assert await output_reaching(st, "t1", 1, 10, 5, timeout_s=30) == 12  # there already
        assert st.on_publish == []
        await st.store.close()
    asyncio.run(go())
