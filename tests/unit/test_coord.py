"""Coordination through a real Redis (127.0.0.1:6379; skips without it, fails in CI):
the directory's epoch compare-and-set, the inbox's at-least-once delivery, leases and
noticing a flush. Each test has its own key prefix, deleted afterwards."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cortex.errors import ConfigError
from cortexd.coord import DirEntry, Message
from cortexd.coord.keys import Keys
from cortexd.coord.redis import RedisCoordinator, split_url
from tests.rediskit import redis_prefix


def run(body: Callable[[str, str], Awaitable[None]]) -> None:
    with redis_prefix() as (url, prefix):
        asyncio.run(body(url, prefix))


async def until(predicate: Callable[[], Any], what: str, timeout_s: float = 5.0) -> None:
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_urls_are_checked() -> None:
    assert split_url("redis://127.0.0.1:6379/2?prefix=c1") == ("redis://127.0.0.1:6379/2", "c1")
    assert split_url("redis://h:1/0")[1] == "cortex"
    for bad in ("http://h:1/0", "redis://h:1/0?prefix=a%20b"):
        with pytest.raises(ConfigError):
            split_url(bad)


def test_directory_keeps_the_newest_session_and_tells_the_old_host() -> None:
    async def body(url: str, prefix: str) -> None:
        inbox_b: list[Message] = []

        async def on_b(msg: Message) -> None:
            inbox_b.append(msg)

        async def ignore(msg: Message) -> None:
            return None

        a = RedisCoordinator(url, "hub-a", 2000)
        b = RedisCoordinator(url, "hub-b", 2000)
        await a.open(ignore)
        await b.open(on_b)
        try:
            b.node_up(DirEntry("hub-b", 0, 5, {"os": "linux"}, 4), "n1")

            async def on_b_dir() -> bool:
                e = await a.lookup("n1")
                return e is not None and e.host == "hub-b"
            await until(on_b_dir, "n1 published by hub B")
            # An older session never overwrites a newer one; a withdrawal of another
            # session's entry is a no-op.
            a.node_up(DirEntry("hub-a", 0, 3), "n1")
            a.node_down("n1", 3)
            a.node_up(DirEntry("hub-a", 1, 7), "n2")

            async def n2_there() -> bool:
                return await a.lookup("n2") is not None
            await until(n2_there, "n2 published")  # a's queue is in order: n1's ops ran
            entry = await a.lookup("n1")
            assert entry is not None and (entry.host, entry.epoch) == ("hub-b", 5)
            # The node re-attaches at A with a newer epoch: B is told to close session 5.
            a.node_up(DirEntry("hub-a", 0, 9), "n1")

            async def told() -> bool:
                return ["close", "n1", 5] in inbox_b
            await until(told, "hub B told to close its stale session")
            entry = await a.lookup("n1")
            assert entry is not None and (entry.host, entry.epoch) == ("hub-a", 9)
            a.node_down("n1", 9)

            async def gone() -> bool:
                return await a.lookup("n1") is None
            await until(gone, "n1 withdrawn")
            assert set(await a.directory(max_age_s=0)) == {"n2"}
        finally:
            await a.close()
            await b.close()
    run(body)


def test_inbox_redelivers_what_was_not_acknowledged() -> None:
    async def body(url: str, prefix: str) -> None:
        got: list[Message] = []
        crash = asyncio.Event()

        async def dies_on_second(msg: Message) -> None:
            if msg == ["offer", "t2", 1]:
                crash.set()
                await asyncio.Event().wait()  # never returns: the host dies mid-message
            got.append(msg)

        sender = RedisCoordinator(url, "hub-a", 2000)
        first = RedisCoordinator(url, "hub-b", 2000)
        await first.open(dies_on_second)
        try:
            assert await sender.send("hub-b", ["offer", "t1", 1])
            assert await sender.send("hub-b", ["offer", "t2", 1])
            await asyncio.wait_for(crash.wait(), 5)
        finally:
            await first.close()  # t2 was delivered, never acknowledged
        assert got == [["offer", "t1", 1]]
        again: list[Message] = []

        async def collect(msg: Message) -> None:
            again.append(msg)

        second = RedisCoordinator(url, "hub-b", 2000)  # hub B restarted
        await second.open(collect)
        try:
            assert await sender.send("hub-b", ["offer", "t3", 1])

            async def both() -> bool:
                return len(again) >= 2
            await until(both, "the unacknowledged and the new message")
            assert again == [["offer", "t2", 1], ["offer", "t3", 1]]
        finally:
            await second.close()
            await sender.close()
    run(body)


def test_leases_expire_are_released_and_a_flush_is_noticed() -> None:
    async def body(url: str, prefix: str) -> None:
        async def ignore(msg: Message) -> None:
            return None

        keys = Keys(prefix)
        a = RedisCoordinator(url, "hub-a", 300)
        b = RedisCoordinator(url, "hub-b", 60_000)
        await a.open(ignore)
        await b.open(ignore)
        try:
            assert await a.renew({0, 1}, []) is False
            assert await b.renew({0}, []) is False
            assert await b.redis.exists(keys.shard_lease("hub-a", 1)) == 1
            assert await a.renew({0}, []) is False  # shard 1 gone: its lease released
            assert await b.redis.exists(keys.shard_lease("hub-a", 1)) == 0
            b._hosts_cache = (0.0, set())
            assert await b.live_hosts() == {"hub-a", "hub-b"}

            async def a_expired() -> bool:
                b._hosts_cache = (0.0, set())
                return await b.live_hosts() == {"hub-b"}
            await until(a_expired, "hub A's 300 ms lease to expire")
            await b.redis.delete(keys.host_lease("hub-b"))  # what FLUSHALL does to it
            assert await b.renew({0}, []) is True
            assert await b.renew({0}, []) is False
        finally:
            await a.close()
            await b.close()
        assert await_exists(url, keys.host_lease("hub-b")) == 0  # released on close
    run(body)


def await_exists(url: str, key: str) -> int:
    import redis

    r = redis.Redis.from_url(split_url(url)[0])
    try:
        return int(r.exists(key))
    finally:
        r.close()


def test_healthy_only_while_redis_answers() -> None:
    """The janitor and grace expiry act on the directory only while Redis answers: a
    coordinator that cannot reach it is not healthy (and says "nothing known")."""
    async def body(url: str, prefix: str) -> None:
        async def ignore(msg: Message) -> None:
            return None

        dead = RedisCoordinator(f"redis://127.0.0.1:1/0?prefix={prefix}", "hub-a", 2000)
        await dead.open(ignore)
        try:
            assert await dead.renew({0}, []) is False
            assert not dead.healthy
            assert await dead.directory(max_age_s=0) == {}
            assert await dead.live_hosts() == {"hub-a"}
        finally:
            await dead.close()
        live = RedisCoordinator(url, "hub-b", 2000)
        await live.open(ignore)
        try:
            assert not live.healthy or await live.renew({0}, []) is False
            await live.renew({0}, [])
            assert live.healthy
        finally:
            await live.close()
    run(body)
