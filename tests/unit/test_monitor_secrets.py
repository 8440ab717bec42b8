"""The hub's secrets (cortexd/control/secrets.py): sealed at rest, redacted in contexts."""

import asyncio
import os
import stat
from pathlib import Path

from cortexd.control.secrets import SecretKeeper, load_key


class Store:
    def __init__(self) -> None:
        self.rows: list[tuple[str, bytes]] = []

    async def add_secret(self, owner: str, task_id: str, sealed: bytes, at_ms: int) -> None:
        self.rows.append((task_id, sealed))

    async def task_secrets(self, task_id: str, limit: int = 64) -> list[bytes]:
        return [s for t, s in self.rows if t == task_id][-limit:]


def test_sealed_in_the_store_and_redacted_by_a_new_keeper(tmp_path: Path) -> None:
    key = load_key(tmp_path)
    assert load_key(tmp_path) == key  # made once
    assert stat.S_IMODE(os.stat(tmp_path / "secrets.key").st_mode) == 0o600
    store = Store()

    async def go() -> None:
        first = SecretKeeper(store, key)  # type: ignore[arg-type]
        await first.add("default", "t-1", b"hunter2", 1)
        await first.add("default", "t-1", b"hunter2", 2)  # kept once
        await first.add("default", "t-1", b"hunter2-long", 3)
        assert len(store.rows) == 2 and all(b"hunter2" not in s for _, s in store.rows)
        again = SecretKeeper(store, key)  # type: ignore[arg-type]  # a restarted control
        head, tail = await again.redact("t-1", b"pw=hunter2-long", b"typed hunter2\n")
        assert (head, tail) == (b"pw=[secret]", b"typed [secret]\n")
        assert await again.redact("t-2", b"hunter2") == [b"hunter2"]  # another task's
        other = SecretKeeper(store, os.urandom(32))  # type: ignore[arg-type]
        assert await other.redact("t-1", b"x") == [b"x"] and other.unreadable == 2
        # A sealed secret is bound to its task: moved to another, it does not open.
        store.rows.append(("t-3", store.rows[0][1]))
        assert await again.redact("t-3", b"hunter2") == [b"hunter2"]
        assert again.unreadable == 1
    asyncio.run(go())


def test_what_the_feed_may_redact_without_the_store(tmp_path: Path) -> None:
    from cortexd.control.monitorapi import screen_of

    store = Store()

    async def go() -> None:
        k = SecretKeeper(store, load_key(tmp_path))  # type: ignore[arg-type]
        assert k.redact_known("t-1", b"x") is None  # not known: the feed sends no screen
        k.new_task("t-1")  # created just now: nothing to redact yet
        assert k.redact_known("t-1", b"x") == [b"x"]
        await k.add("default", "t-1", b"hunter2", 1)
        assert k.redact_known("t-1", b"typed hunter2") == [b"typed [secret]"]
    asyncio.run(go())
    assert screen_of(b"head", b"tail", 0, 6) == b"adtail"  # contiguous: joined
    assert screen_of(b"head", b"tail", 5, 6) == b"tail"  # a gap: the tail only
