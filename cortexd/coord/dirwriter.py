"""The node directory's writer: queued publishes and withdrawals, sent in batches.

A hub publishes a node's entry on attach and withdraws it on detach
(``RedisCoordinator.node_up`` / ``node_down``); both only queue here, and one writer
task sends the queue in pipelined batches (a 10,000-node storm is a few hundred
round trips, not 10,000). Invariants:

- The publish is a compare-and-set on the session epoch (a Lua script), so a slow
  hub can never overwrite a newer session's entry with an older one; a withdrawal
  deletes the entry only if it is still that session's.
- When the entry a publish replaced named another host with an older session, that
  host is told to close its stale session (``["close", node, epoch]``).
- The queue is bounded (``MAX_PENDING_UPDATES``): past it the oldest update is
  dropped and counted; the directory is a hint, and the next renewal after a
  flush republishes every node.
- An update leaves the queue only after the pipeline that carried it was executed.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from cortexd.coord.base import DirEntry, Message
from cortexd.coord.keys import Keys

MAX_PENDING_UPDATES = 100_000
UPDATES_PER_PIPELINE = 1_000

# KEYS: dir, dir:epoch; ARGV: node, epoch, value. Returns {applied, previous value}.
_PUBLISH = """
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) < cur then return {0, false} end
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {1, prev}
"""
# KEYS: dir, dir:epoch; ARGV: node, epoch. Deletes the entry if it is still that session's.
_WITHDRAW = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

#: ("up" | "down", node id, session epoch, packed entry or b"")
Update = tuple[str, str, int, bytes]


class DirectoryWriter:
    def __init__(self, redis: Any, keys: Keys, host_id: str,
                 send: Callable[[str, Message], Awaitable[bool]]) -> None:
        self.redis = redis
        self.keys = keys
        self.host_id = host_id
        self._send = send
        self._publish = redis.register_script(_PUBLISH)
        self._withdraw = redis.register_script(_WITHDRAW)
        self._pending: deque[Update] = deque()
        self.ready = asyncio.Event()  # set when something was queued
        self.dropped = 0

    def queue(self, op: Update) -> None:
        if len(self._pending) >= MAX_PENDING_UPDATES:
            self._pending.popleft()  # a hint lost; the next renewal republishes
            self.dropped += 1
        self._pending.append(op)
        self.ready.set()

    async def flush(self) -> None:
        """Send every queued update, a pipeline of at most UPDATES_PER_PIPELINE at a time."""
        keys = [self.keys.directory, self.keys.directory_epochs]
        while self._pending:
            batch = [self._pending[i] for i in range(min(len(self._pending),
                                                         UPDATES_PER_PIPELINE))]
            pipe = self.redis.pipeline(transaction=False)
            for kind, node_id, epoch, value in batch:
                if kind == "up":
                    await self._publish(keys=keys, args=[node_id, epoch, value], client=pipe)
                else:
                    await self._withdraw(keys=keys, args=[node_id, epoch], client=pipe)
            results = await pipe.execute()
            for _ in batch:
                self._pending.popleft()
            for (kind, node_id, epoch, _v), res in zip(batch, results, strict=True):
                if kind == "up" and res and res[0] == 1 and res[1]:
                    prev = DirEntry.unpack(msgpack.unpackb(res[1]))
                    if prev.host != self.host_id and prev.epoch < epoch:
                        await self._send(prev.host, ["close", node_id, prev.epoch])
