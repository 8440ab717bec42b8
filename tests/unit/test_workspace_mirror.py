"""``WorkspaceMirror.current`` (nodeagent/workspace/mirror.py), the wait of a task in a
workspace, on a real mirror whose hub is out of reach (a closed port): nothing hangs.

Rounds are numbered as they start; a task waits for one numbered after the last that
had started when it asked to end well. The round loop here never runs a round (the hub
is unreachable), so the test moves the counters as that loop does.
"""

import asyncio
import socket
from pathlib import Path

import pytest
import structlog

from nodeagent.config import AgentConfig
from nodeagent.workspace import mirror as mirror_mod
from nodeagent.workspace.mirror import WorkspaceMirror


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(hub_address="127.0.0.1:1", node_id="n1", token_file=tmp_path / "t",
                       hub_key_file=tmp_path / "k", state_dir=tmp_path / "state",
                       insecure_loopback=True, control_address=f"127.0.0.1:{closed_port()}")


def test_not_attached_fails_after_a_short_wait_for_the_hubs_word(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror_mod, "ATTACH_WAIT_S", 0.2)

    async def main() -> None:
        m = WorkspaceMirror(config(tmp_path), "token", structlog.get_logger())
        try:
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(LookupError, match="not attached on this node"):
                await m.current("w1", timeout_s=30)
            assert asyncio.get_running_loop().time() - t0 < 5
        finally:
            await m.close()

    asyncio.run(main())


def test_a_round_under_way_does_not_count_and_an_unreachable_hub_times_out(
        tmp_path: Path) -> None:
    async def main() -> None:
        m = WorkspaceMirror(config(tmp_path), "token", structlog.get_logger())
        try:
            await m._set_attachments({"w1": str(tmp_path / "copy")})
            c = m.copies["w1"]
            with pytest.raises(TimeoutError, match="within 0.3 s .the hub is out of reach"):
                await m.current("w1", timeout_s=0.3)

            c.started = 1  # round 1 is under way (it may have planned before the task)
            waiter = asyncio.create_task(m.current("w1", timeout_s=30))
            await asyncio.sleep(0)
            assert c.trigger.is_set()  # asks for another round
            c.completed = 1  # round 1 ends well: not enough
            c.done.set()
            c.done = asyncio.Event()
            finished, _ = await asyncio.wait({waiter}, timeout=0.05)
            assert not finished
            c.started, c.completed = 2, 2  # round 2 began after the task came, and ended
            c.done.set()
            assert await asyncio.wait_for(waiter, 5) == c.root

            waiter = asyncio.create_task(m.current("w1", timeout_s=30))
            await asyncio.sleep(0)
            await m._set_attachments({})  # detached meanwhile
            with pytest.raises(LookupError, match="was detached"):
                await asyncio.wait_for(waiter, 5)
        finally:
            await m.close()

    asyncio.run(main())
