"""What the hub asks of coordination, and the embedded (single host) answer.

``coordination = "local"`` (the default) is one hub host alone: its control
process is the coordinator and every call here is a no-op or answers "nobody
else". ``coordination = "redis://…"`` is :class:`cortexd.coord.redis.RedisCoordinator`.

Coordination is a hint and a transport, never the safety mechanism: a wrong or
missing answer may cost a retry or a delay, never a lost or doubled task. That
is the store's job (conditional writes on attempt and node session epoch).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: A message between hub hosts: a msgpack-able list whose first item is its kind.
Message = list[Any]
Handler = Callable[[Message], Awaitable[None]]


@dataclass(slots=True)
class DirEntry:
    """Where a node is attached: the directory's value for one node."""

    host: str
    shard: int
    epoch: int
    labels: dict[str, str] = field(default_factory=dict)
    capacity: int = 0
    running: int = 0
    draining: bool = False

    def pack(self) -> list[Any]:
        return [self.host, self.shard, self.epoch, self.labels, self.capacity, self.running,
                self.draining]

    @classmethod
    def unpack(cls, raw: list[Any]) -> "DirEntry":
        host, shard, epoch, labels, capacity, running, draining = raw[:7]
        return cls(str(host), int(shard), int(epoch), {str(k): str(v) for k, v in labels.items()},
                   int(capacity), int(running), bool(draining))


@dataclass(slots=True)
class ShardReport:
    host: str
    shard: int
    pid: int
    alive: bool
    restarts: int
    nodes: int
    frames_in: int
    frames_out: int


class Coordinator(Protocol):
    host_id: str
    clustered: bool

    @property
    def healthy(self) -> bool:
        """Whether coordination answered recently enough to act on what it says."""

    async def open(self, on_message: Handler) -> None: ...

    async def close(self) -> None: ...

    def node_up(self, entry: DirEntry, node_id: str) -> None:
        """Publish where a node is now attached (queued; sent in the next batch)."""

    def node_down(self, node_id: str, epoch: int) -> None:
        """Withdraw a node's entry if it still names this session (queued)."""

    async def renew(self, alive_shards: set[int], reports: list[ShardReport]) -> bool:
        """Renew leases; True when this host's own lease had vanished (a flush)."""

    async def directory(self, max_age_s: float = 1.0) -> dict[str, DirEntry]: ...

    def known_directory(self) -> dict[str, DirEntry]:
        """The directory as last read, without I/O ({} before the first read)."""

    async def lookup(self, node_id: str) -> DirEntry | None: ...

    async def live_hosts(self) -> set[str]: ...

    async def send(self, host: str, msg: Message) -> bool: ...

    async def send_many(self, msgs: list[tuple[str, Message]]) -> bool:
        """Send (host, message) pairs in one round trip; False if none could be sent."""

    async def broadcast(self, msg: Message) -> int: ...

    async def shard_reports(self) -> list[ShardReport]: ...


class LocalCoordinator:
    """One host alone: nobody else to tell, nobody else to ask."""

    clustered = False
    healthy = True

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id

    async def open(self, on_message: Handler) -> None:
        return None

    async def close(self) -> None:
        return None

    def node_up(self, entry: DirEntry, node_id: str) -> None:
        return None

    def node_down(self, node_id: str, epoch: int) -> None:
        return None

    async def renew(self, alive_shards: set[int], reports: list[ShardReport]) -> bool:
        return False

    async def directory(self, max_age_s: float = 1.0) -> dict[str, DirEntry]:
        return {}

    def known_directory(self) -> dict[str, DirEntry]:
        return {}

    async def lookup(self, node_id: str) -> DirEntry | None:
        return None

    async def live_hosts(self) -> set[str]:
        return {self.host_id}

    async def send(self, host: str, msg: Message) -> bool:
        return False

    async def send_many(self, msgs: list[tuple[str, Message]]) -> bool:
        return False

    async def broadcast(self, msg: Message) -> int:
        return 0

    async def shard_reports(self) -> list[ShardReport]:
        return []
