"""A shard's table of node sessions, without I/O.

A :class:`NodeSession` is one attached stream: the node's identity (from its
credential), the session epoch the control process minted, an outbound queue of
ready-to-write HubFrame bytes, and when the node was last heard from. The table
enforces one session per node per shard (a newer attach supersedes the older)
and routes control messages by ``(node_id, epoch)`` so that a message meant for
a superseded session is dropped, never written to its successor.
"""

import asyncio
import time
from dataclasses import dataclass, field

from cortexd.shards.writes import Pipeline, Tracker

#: Outbound frames queued for one node before the shard gives up on it as too slow.
MAX_OUTBOUND = 10_000

CLOSE = b""  # sentinel on the outbound queue: end the stream


@dataclass(eq=False)
class NodeSession:
    node_id: str
    conn_id: int
    epoch: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    heartbeat_s: float = 5.0  # the interval this node was asked for in its Welcome
    outbound: asyncio.Queue[bytes] = field(
        default_factory=lambda: asyncio.Queue(maxsize=MAX_OUTBOUND + 1))
    welcome: asyncio.Future[tuple[int, bytes]] | None = None
    close_reason: str = ""
    credential: str = ""  # sha256 of the token it attached with; revoked -> dropped
    tracker: Tracker = field(default_factory=Tracker)  # tasks whose frames go to control
    pipeline: Pipeline | None = None  # the frames it writes here (cortexd/shards/writes.py)

    def push(self, frame: bytes) -> bool:
        """Queue a frame for the node; False (and the session closes) when it is too slow."""
        if self.close_reason:
            return False
        if self.outbound.qsize() >= MAX_OUTBOUND:
            self.close("node is not reading its stream (outbound queue full)")
            return False
        self.outbound.put_nowait(frame)
        return True

    def close(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
            self.outbound.put_nowait(CLOSE)


class SessionTable:
    def __init__(self) -> None:
        self.pending: dict[int, NodeSession] = {}
        self.active: dict[str, NodeSession] = {}
        self._next_conn = 0

    def begin(self, node_id: str, loop: asyncio.AbstractEventLoop) -> NodeSession:
        self._next_conn += 1
        session = NodeSession(node_id, self._next_conn)
        session.welcome = loop.create_future()
        self.pending[session.conn_id] = session
        return session

    def welcomed(self, conn_id: int, epoch: int, frame: bytes, heartbeat_s: float) -> bool:
        """Hand the Welcome to its waiting attach; False when nobody waits for it any more
        (the attach timed out or the node left): the control process must be told."""
        session = self.pending.pop(conn_id, None)
        if session is None or session.welcome is None or session.welcome.done():
            return False
        session.epoch = epoch
        session.heartbeat_s = heartbeat_s
        old = self.active.get(session.node_id)
        if old is not None and old.epoch < epoch:
            old.close("superseded by a newer session of this node")
        self.active[session.node_id] = session
        session.welcome.set_result((epoch, frame))
        return True

    def refused(self, conn_id: int, code: str, message: str) -> None:
        session = self.pending.pop(conn_id, None)
        if session is not None and session.welcome is not None and not session.welcome.done():
            session.welcome.set_exception(RefusedAttach(code, message))

    def route(self, node_id: str, epoch: int) -> NodeSession | None:
        session = self.active.get(node_id)
        if session is None or session.epoch != epoch:
            return None
        return session

    def end(self, session: NodeSession) -> None:
        self.pending.pop(session.conn_id, None)
        if self.active.get(session.node_id) is session:
            del self.active[session.node_id]

    def silent(self, now: float) -> list[NodeSession]:
        """Sessions that sent nothing for three of their heartbeat intervals."""
        return [s for s in self.active.values() if now - s.last_seen > 3 * s.heartbeat_s]


class RefusedAttach(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
