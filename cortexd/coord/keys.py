"""Every Redis key Cortex uses, in one place.

All keys start with the cluster's prefix (``cortex`` unless the coordination URL
says ``?prefix=NAME``), so that two clusters can share one Redis server and an
operator can find everything with ``SCAN MATCH prefix:*``. Nothing here is the
truth: PostgreSQL is. Every key can vanish (FLUSHALL, a Redis restart) and is
rebuilt by the hubs from their own memory and the store within a renewal period.

- ``P:dir`` (hash): node id -> msgpack ``[host, shard, epoch, labels, capacity,
  running, draining]``.
- ``P:dir:epoch`` (hash): node id -> the newest session epoch published; an older
  one never overwrites a newer one.
- ``P:hosts`` (hash): hub host id -> msgpack ``[control address, started ms]``.
- ``P:lease:host:H`` (string, TTL): host H is alive; renewed every TTL/3, deleted
  on a clean stop.
- ``P:lease:shard:H:N`` (string, TTL): shard N of host H is alive; renewed while
  its ring heartbeat moves.
- ``P:shards:H`` (hash, TTL): shard N -> msgpack ``[pid, alive, restarts, nodes,
  frames in, frames out]``.
- ``P:inbox:H`` (stream): messages for host H (task offers, cancels, input, watch
  interest, events).
"""

INBOX_GROUP = "cortexd"
DEFAULT_PREFIX = "cortex"


class Keys:
    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    @property
    def directory(self) -> str:
        return f"{self.prefix}:dir"

    @property
    def directory_epochs(self) -> str:
        return f"{self.prefix}:dir:epoch"

    @property
    def hosts(self) -> str:
        return f"{self.prefix}:hosts"

    def host_lease(self, host: str) -> str:
        return f"{self.prefix}:lease:host:{host}"

    def shard_lease(self, host: str, shard: int) -> str:
        return f"{self.prefix}:lease:shard:{host}:{shard}"

    def shards(self, host: str) -> str:
        return f"{self.prefix}:shards:{host}"

    def inbox(self, host: str) -> str:
        return f"{self.prefix}:inbox:{host}"
